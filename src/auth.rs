//! Credentials: PBKDF2-HMAC-SHA256 password hashes as PHC strings, keyed
//! hashes of account ids, random tokens stored as SHA-256, constant-time
//! comparison, and the validation of ids and passwords. Pure functions; the
//! costly ones run in the PBKDF2 pool, never on the loop.

use crate::encoding::{base64, base64url, hex, unbase64};
use crate::error::ApiError;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

const PHC_ID: &str = "pbkdf2-sha256";
const SALT_BYTES: usize = 16;
const HASH_BYTES: usize = 32;

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|err| ApiError::Internal(format!("getrandom: {err}")))?;
    Ok(bytes)
}

/// A new bearer token (32 random bytes, URL-safe base64: 43 characters).
pub fn new_token() -> Result<String, ApiError> {
    Ok(base64url(&random_bytes::<32>()?))
}

/// What the database stores for a token: hex SHA-256.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The keyed hash stored instead of an account id.
pub fn account_hash(secret: &[u8], normalised_id: &str) -> String {
    hex(&hmac_sha256(secret, normalised_id.as_bytes()))
}

/// The public passphrase-KDF salt of an id (`GET /v1/accounts/{id}/salt`):
/// HMAC under a key of its own, derived from the secret with a label no id
/// can spell (ids have no control characters), so it never equals an
/// account hash.
pub fn kdf_salt(secret: &[u8], normalised_id: &str) -> String {
    let key = hmac_sha256(secret, b"\x01sync-node kdf salt");
    hex(&hmac_sha256(&key, normalised_id.as_bytes()))
}

/// Trims, checks (1..=256 bytes, no control characters) and lower-cases an id.
pub fn normalise_id(id: &str) -> Result<String, ApiError> {
    let id = id.trim();
    if id.is_empty() || id.len() > 256 {
        return Err(ApiError::bad_request("The id must be 1 to 256 bytes after trimming."));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::bad_request("The id must not contain control characters."));
    }
    Ok(id.to_ascii_lowercase())
}

/// Checks a password's length: 8..=1024 bytes.
pub fn check_password(password: &str) -> Result<(), ApiError> {
    if (8..=1024).contains(&password.len()) {
        Ok(())
    } else {
        Err(ApiError::bad_request("The password must be 8 to 1024 bytes."))
    }
}

/// Hashes a password with a fresh salt: `$pbkdf2-sha256$i=N,l=32$salt$hash`.
pub fn hash_password(password: &str, iterations: u32) -> Result<String, ApiError> {
    let salt = random_bytes::<SALT_BYTES>()?;
    Ok(phc_string(password, &salt, iterations))
}

fn phc_string(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; HASH_BYTES];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
    format!("${PHC_ID}$i={iterations},l={HASH_BYTES}${}${}", base64(salt), base64(&out))
}

/// The parts of a stored PHC string.
#[derive(Debug, PartialEq, Eq)]
pub struct PhcHash {
    pub iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

/// Parses `$pbkdf2-sha256$i=N[,l=L]$salt$hash`.
pub fn parse_phc(phc: &str) -> Option<PhcHash> {
    let mut parts = phc.split('$');
    if parts.next() != Some("") || parts.next() != Some(PHC_ID) {
        return None;
    }
    let params = parts.next()?;
    let salt = unbase64(parts.next()?)?;
    let hash = unbase64(parts.next()?)?;
    if parts.next().is_some() || hash.is_empty() {
        return None;
    }
    let mut iterations = None;
    for param in params.split(',') {
        match param.split_once('=')? {
            ("i", n) => iterations = n.parse().ok().filter(|&n| n > 0),
            ("l", n) if n.parse::<usize>().ok()? == hash.len() => {}
            _ => return None,
        }
    }
    Some(PhcHash { iterations: iterations?, salt, hash })
}

/// Verifies a password against a stored PHC string, in constant time.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Some(parsed) = parse_phc(phc) else {
        return false;
    };
    let mut out = vec![0u8; parsed.hash.len()];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &parsed.salt, parsed.iterations, &mut out);
    constant_time_eq(&out, &parsed.hash)
}

/// A well-formed hash that no password matches (its digest is random), with
/// the configured cost: verifying a login for an unknown id against it costs
/// what a real one costs, and making it costs nothing.
pub fn decoy_hash(iterations: u32) -> Result<String, ApiError> {
    let salt = random_bytes::<SALT_BYTES>()?;
    let digest = random_bytes::<HASH_BYTES>()?;
    Ok(format!("${PHC_ID}$i={iterations},l={HASH_BYTES}${}${}", base64(&salt), base64(&digest)))
}

/// PBKDF2 work that the loop hands to the PBKDF2 pool. Its `Debug`
/// never shows a password.
pub enum PasswordJob {
    Hash {
        password: String,
        iterations: u32,
    },
    /// Verify `password`; if it matches and `then_hash` is set, hash that
    /// (a new password, or the same one at the current cost) in the same
    /// trip. A hash made with fewer iterations than `pad_to` is padded with
    /// the difference, so its verdict takes as long as one at `pad_to`
    /// (timing must not tell which ids exist, or how old their hash is).
    Verify {
        password: String,
        phc: String,
        then_hash: Option<(String, u32)>,
        pad_to: u32,
    },
}

impl std::fmt::Debug for PasswordJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordJob::Hash { iterations, .. } => {
                f.debug_struct("Hash").field("password", &"<redacted>").field("iterations", iterations).finish()
            }
            PasswordJob::Verify { then_hash, pad_to, .. } => f
                .debug_struct("Verify")
                .field("password", &"<redacted>")
                .field("pad_to", pad_to)
                .field("then_hash", &then_hash.as_ref().map(|(_, iterations)| ("<redacted>", iterations)))
                .finish_non_exhaustive(),
        }
    }
}

/// The result of a [`PasswordJob`].
#[derive(Debug)]
pub enum PasswordOutcome {
    Hashed(Result<String, ApiError>),
    Verified { matches: bool, new_hash: Option<Result<String, ApiError>> },
}

impl PasswordJob {
    pub fn run(self) -> PasswordOutcome {
        match self {
            PasswordJob::Hash { password, iterations } => PasswordOutcome::Hashed(hash_password(&password, iterations)),
            PasswordJob::Verify { password, phc, then_hash, pad_to } => {
                let matches = verify_password(&password, &phc);
                let spent = hash_iterations(&phc).unwrap_or(0);
                if spent < pad_to {
                    let mut waste = [0u8; 32];
                    pbkdf2::pbkdf2_hmac::<Sha256>(
                        password.as_bytes(),
                        b"sync-node padding",
                        pad_to - spent,
                        &mut waste,
                    );
                }
                let new_hash = then_hash.filter(|_| matches).map(|(next, iterations)| hash_password(&next, iterations));
                PasswordOutcome::Verified { matches, new_hash }
            }
        }
    }
}

/// The cost a stored hash was made with (`None`: not a hash of ours).
pub fn hash_iterations(phc: &str) -> Option<u32> {
    parse_phc(phc).map(|parsed| parsed.iterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_rfc7914_vector() {
        // RFC 7914 §11: PBKDF2-HMAC-SHA256, P="passwd", S="salt", c=1, dkLen=64 (first 32 bytes).
        let phc = phc_string("passwd", b"salt", 1);
        let parsed = parse_phc(&phc).unwrap();
        assert_eq!(hex(&parsed.hash), "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc");
        assert_eq!(parsed.iterations, 1);
    }

    #[test]
    fn password_round_trip_and_format() {
        let phc = hash_password("correct horse", 1000).unwrap();
        assert!(phc.starts_with("$pbkdf2-sha256$i=1000,l=32$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horsE", &phc));
        assert!(!verify_password("correct horse", "garbage"));
        assert_ne!(phc, hash_password("correct horse", 1000).unwrap(), "salts differ");
    }

    #[test]
    fn phc_parser_rejects_malformed() {
        for bad in [
            "",
            "$pbkdf2-sha256$i=0$AA$AA",
            "$pbkdf2-sha512$i=1$AA$AA",
            "$pbkdf2-sha256$i=1,l=5$AA$AAAA",
            "$pbkdf2-sha256$x=1$AA$AA",
            "$pbkdf2-sha256$i=1$AA$",
            "$pbkdf2-sha256$i=1$AA$AA$AA",
        ] {
            assert_eq!(parse_phc(bad), None, "{bad}");
        }
        assert!(parse_phc("$pbkdf2-sha256$i=5$AAAA$AAAA").is_some());
    }

    #[test]
    fn ids_normalise() {
        assert_eq!(normalise_id("  Alice@Example.ORG \n").unwrap(), "alice@example.org");
        assert_eq!(normalise_id("Ünïcode").unwrap(), "Ünïcode");
        assert!(normalise_id("   ").is_err());
        assert!(normalise_id("a\u{7}b").is_err());
        assert!(normalise_id(&"x".repeat(257)).is_err());
        assert!(normalise_id(&"x".repeat(256)).is_ok());
    }

    #[test]
    fn kdf_salts_are_keyed_stable_and_not_account_hashes() {
        let salt = kdf_salt(b"secret-one", "alice");
        assert_eq!(salt, kdf_salt(b"secret-one", "alice"));
        assert_ne!(salt, kdf_salt(b"secret-two", "alice"));
        assert_ne!(salt, kdf_salt(b"secret-one", "bob"));
        assert_ne!(salt, account_hash(b"secret-one", "alice"));
        assert_eq!(salt.len(), 64);
    }

    #[test]
    fn account_hash_is_keyed_and_stable() {
        let a = account_hash(b"secret-one", "alice");
        assert_eq!(a, account_hash(b"secret-one", "alice"));
        assert_ne!(a, account_hash(b"secret-two", "alice"));
        assert_eq!(a.len(), 64);
        // RFC 4231 test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn readme_store_key_example() {
        // README "Deriving store keys": key_salt 00 01 … 1f, name "notes".
        let key_salt: Vec<u8> = (0..32).collect();
        assert_eq!(
            hex(&hmac_sha256(&key_salt, b"notes")),
            "53ecf36184f2aff240a0b0182e4b281bf3babc0b928696c90e4b4e000dc8869e"
        );
    }

    #[test]
    fn tokens_and_comparison() {
        let token = new_token().unwrap();
        assert_eq!(token.len(), 43);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn decoy_has_the_configured_cost_and_matches_nothing() {
        let decoy = decoy_hash(1234).unwrap();
        assert_eq!(parse_phc(&decoy).unwrap().iterations, 1234);
        assert!(!verify_password("", &decoy));
        assert!(!verify_password("password", &decoy));
    }

    #[test]
    fn jobs_never_show_passwords() {
        let hash = PasswordJob::Hash { password: "hunter2 secret".into(), iterations: 1000 };
        let verify = PasswordJob::Verify {
            password: "hunter2 secret".into(),
            phc: "$pbkdf2-sha256$x".into(),
            then_hash: Some(("next secret".into(), 1000)),
            pad_to: 1000,
        };
        for text in [format!("{hash:?}"), format!("{verify:?}")] {
            assert!(!text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn verify_then_hash() {
        let phc = hash_password("old password", 1000).unwrap();
        let job = PasswordJob::Verify {
            password: "old password".into(),
            phc: phc.clone(),
            then_hash: Some(("new password".into(), 2000)),
            pad_to: 1000,
        };
        let PasswordOutcome::Verified { matches: true, new_hash: Some(Ok(new)) } = job.run() else { panic!() };
        assert!(verify_password("new password", &new));
        assert_eq!(hash_iterations(&new), Some(2000));
        let job = PasswordJob::Verify {
            password: "wrong".into(),
            phc,
            then_hash: Some(("new password".into(), 2000)),
            pad_to: 1000,
        };
        assert!(matches!(job.run(), PasswordOutcome::Verified { matches: false, new_hash: None }));
    }

    #[test]
    fn password_lengths() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(1025)).is_err());
    }
}
