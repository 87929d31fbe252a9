//! Configuration from environment variables: one pure parser over
//! (name, value) pairs, so every rule is unit-tested, and a reader of the
//! real environment around it.

use crate::limits::{ENTRY_OVERHEAD, MAX_ENTRY_CAP};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// Every variable the server reads, with its default, for `--help`.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    ("PORT", "8080", "TCP port (0 picks a free one; the address is printed at start)"),
    ("BIND", "0.0.0.0", "address to listen on"),
    ("STATIC_ROOT", "./data", "data directory; the server creates it (0700) if missing, commands never do"),
    ("MAX_STORE_BYTES", "67108864", "largest store body in bytes"),
    ("QUOTA_BYTES", "unset", "per-account total of owned stores in bytes"),
    (
        "REGISTRATION",
        "open",
        "open, invite (a code from `sync-node invite` is needed) or closed (accounts only via `sync-node account add`)",
    ),
    ("SESSION_TTL_DAYS", "30", "session lifetime in days (1..=3650)"),
    ("CORS_ORIGINS", "*", "* or a comma-separated list of allowed origins"),
    ("RESET_HOOK", "unset", "program run for each password-reset request"),
    ("PBKDF2_ITERATIONS", "600000", "PBKDF2 cost for new password hashes (1000..=100000000)"),
    (
        "TRUST_PROXY",
        "unset",
        "proxies whose X-Forwarded-For gives the client address: 1 (loopback) or a list of addresses/CIDRs",
    ),
    ("ACCESS_LOG", "unset", "1: one log line per request (time, address, method, route, status, bytes, microseconds)"),
    (
        "MAX_CONNECTIONS",
        "10000",
        "open connections at once (1..=65536); idle ones are shed first, then 503. The default is lowered to what the descriptor limit allows; a value set is refused if it does not fit",
    ),
    (
        "MAX_CONNECTIONS_PER_ADDRESS",
        "32",
        "open connections from one client address or IPv6 /64 (1..=65536; behind a trusted proxy, per forwarded client)",
    ),
    ("MIN_FREE_BYTES", "104857600", "store writes that would leave less free disk space get 507"),
    (
        "MAX_ENTRY_BYTES",
        "1048576, or MAX_LOG_BYTES - 128 if smaller",
        "largest store log entry in bytes (1..=4194304, at most MAX_LOG_BYTES - 128)",
    ),
    (
        "MAX_LOG_BYTES",
        "= MAX_STORE_BYTES",
        "most a store's log may hold before it must be compacted (its bytes and 128 per entry)",
    ),
    ("MAX_STORES_PER_ACCOUNT", "10000", "stores one account may own (1..=10000000)"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

/// Who may create an account through `POST /v1/accounts` (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Open,
    /// With a code made by `sync-node invite`.
    Invite,
    /// Only `sync-node account add`.
    Closed,
}

impl Registration {
    /// The word `/v1/info` publishes.
    pub fn as_str(self) -> &'static str {
        match self {
            Registration::Open => "open",
            Registration::Invite => "invite",
            Registration::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub port: u16,
    pub bind: IpAddr,
    pub static_root: PathBuf,
    pub max_store_bytes: u64,
    pub quota_bytes: Option<u64>,
    pub registration: Registration,
    pub session_ttl_days: u32,
    pub cors_origins: CorsOrigins,
    pub reset_hook: Option<PathBuf>,
    pub pbkdf2_iterations: u32,
    pub trust_proxy: crate::http::proxies::TrustedProxies,
    /// One log line per answered request.
    pub access_log: bool,
    pub max_connections: usize,
    /// Whether `MAX_CONNECTIONS` was set (then it must fit the descriptor
    /// limit; the default is lowered to fit).
    pub max_connections_set: bool,
    pub max_connections_per_address: usize,
    pub min_free_bytes: u64,
    pub max_entry_bytes: u64,
    pub max_log_bytes: u64,
    pub max_stores_per_account: u64,
}

/// A bad value, naming its variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

impl Config {
    /// Reads the process environment. A value that is not UTF-8 is an error.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut pairs = Vec::new();
        for (name, _, _) in VARIABLES {
            if let Some(value) = std::env::var_os(name) {
                let value = value
                    .into_string()
                    .map_err(|_| ConfigError { variable: name, problem: "the value is not valid UTF-8".into() })?;
                pairs.push((name.to_string(), value));
            }
        }
        Config::from_pairs(pairs)
    }

    /// The pure parser. Unknown names are ignored; an empty value means unset.
    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = pairs.into_iter().filter(|(_, v)| !v.trim().is_empty()).collect();
        let get = |name: &str| vars.get(name).map(|v| v.trim());
        let max_store_bytes = number(get("MAX_STORE_BYTES"), "MAX_STORE_BYTES", 64 * 1024 * 1024, 1, u64::MAX)?;
        // A log counts its bytes and ENTRY_OVERHEAD per entry.
        let overhead = ENTRY_OVERHEAD;
        let log_default = max_store_bytes.max(overhead + 1);
        let max_log_bytes = number(get("MAX_LOG_BYTES"), "MAX_LOG_BYTES", log_default, overhead + 1, u64::MAX)?;
        // An entry the log could never hold is a contradiction, not a limit.
        let entry_default = (1024 * 1024).min(max_log_bytes - overhead);
        let max_entry_bytes = number(get("MAX_ENTRY_BYTES"), "MAX_ENTRY_BYTES", entry_default, 1, MAX_ENTRY_CAP)?;
        if max_entry_bytes + overhead > max_log_bytes {
            return Err(error(
                "MAX_ENTRY_BYTES",
                format!(
                    "{max_entry_bytes} and the {overhead} bytes an entry counts for are more than MAX_LOG_BYTES \
                     ({max_log_bytes}): no such entry could be appended"
                ),
            ));
        }
        Ok(Config {
            port: number(get("PORT"), "PORT", 8080, 0, u16::MAX)?,
            bind: match get("BIND") {
                None => IpAddr::from([0, 0, 0, 0]),
                Some(text) => text.parse().map_err(|_| error("BIND", format!("'{text}' is not an IP address")))?,
            },
            static_root: PathBuf::from(get("STATIC_ROOT").unwrap_or("./data")),
            max_store_bytes,
            quota_bytes: match get("QUOTA_BYTES") {
                None => None,
                value => Some(number(value, "QUOTA_BYTES", 0, 0, u64::MAX)?),
            },
            registration: match get("REGISTRATION") {
                None | Some("open") => Registration::Open,
                Some("invite") => Registration::Invite,
                Some("closed") => Registration::Closed,
                Some(other) => {
                    return Err(error("REGISTRATION", format!("'{other}' is not 'open', 'invite' or 'closed'")));
                }
            },
            session_ttl_days: number(get("SESSION_TTL_DAYS"), "SESSION_TTL_DAYS", 30, 1, 3650)?,
            cors_origins: cors(get("CORS_ORIGINS"))?,
            reset_hook: get("RESET_HOOK").map(PathBuf::from),
            pbkdf2_iterations: number(get("PBKDF2_ITERATIONS"), "PBKDF2_ITERATIONS", 600_000, 1000, 100_000_000)?,
            trust_proxy: crate::http::proxies::TrustedProxies::parse(get("TRUST_PROXY"))
                .map_err(|problem| error("TRUST_PROXY", problem))?,
            access_log: switch(get("ACCESS_LOG"), "ACCESS_LOG")?,
            max_connections: number(get("MAX_CONNECTIONS"), "MAX_CONNECTIONS", 10_000, 1, 65_536)?,
            max_connections_set: get("MAX_CONNECTIONS").is_some(),
            max_connections_per_address: number(
                get("MAX_CONNECTIONS_PER_ADDRESS"),
                "MAX_CONNECTIONS_PER_ADDRESS",
                32,
                1,
                65_536,
            )?,
            min_free_bytes: number(get("MIN_FREE_BYTES"), "MIN_FREE_BYTES", 100 * 1024 * 1024, 0, u64::MAX)?,
            max_entry_bytes,
            max_log_bytes,
            max_stores_per_account: number(
                get("MAX_STORES_PER_ACCOUNT"),
                "MAX_STORES_PER_ACCOUNT",
                10_000,
                1,
                10_000_000,
            )?,
        })
    }
}

/// A variable that is 1 (on) or 0 or unset (off).
fn switch(value: Option<&str>, variable: &'static str) -> Result<bool, ConfigError> {
    match value {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(error(variable, format!("'{other}' is neither 1 nor 0"))),
    }
}

fn error(variable: &'static str, problem: String) -> ConfigError {
    ConfigError { variable, problem }
}

fn number<T>(value: Option<&str>, variable: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(text) = value else {
        return Ok(default);
    };
    match text.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(error(variable, format!("'{text}' is not a whole number from {min} to {max}"))),
    }
}

fn cors(value: Option<&str>) -> Result<CorsOrigins, ConfigError> {
    match value {
        None | Some("*") => Ok(CorsOrigins::Any),
        Some(list) => {
            let origins: Vec<String> = list.split(',').map(|o| o.trim().to_owned()).collect();
            match origins.iter().find(|o| !is_origin(o)) {
                Some(bad) => Err(error("CORS_ORIGINS", format!("'{bad}' is not an origin like https://app.example"))),
                None => Ok(CorsOrigins::List(origins)),
            }
        }
    }
}

fn is_origin(text: &str) -> bool {
    match text.split_once("://") {
        Some((scheme, host)) => {
            !scheme.is_empty()
                && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                && !host.is_empty()
                && !host.contains('/')
                && host.bytes().all(|b| b.is_ascii_graphic())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_pairs(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())))
    }

    fn failing_variable(pairs: &[(&str, &str)]) -> &'static str {
        parse(pairs).unwrap_err().variable
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.port, 8080);
        assert_eq!(config.static_root, PathBuf::from("./data"));
        assert_eq!(config.max_store_bytes, 67_108_864);
        assert_eq!(config.quota_bytes, None);
        assert_eq!(config.registration, Registration::Open);
        assert_eq!(config.session_ttl_days, 30);
        assert_eq!(config.cors_origins, CorsOrigins::Any);
        assert_eq!(config.pbkdf2_iterations, 600_000);
        assert!(!config.trust_proxy.any());
        assert_eq!((config.max_connections, config.max_connections_set), (10_000, false));
        assert_eq!(config.max_connections_per_address, 32, "four addresses hold at most half the slots");
        assert_eq!(config.min_free_bytes, 104_857_600);
        assert_eq!(config.max_entry_bytes, 1_048_576);
        assert_eq!(config.max_log_bytes, config.max_store_bytes, "defaults to MAX_STORE_BYTES");
        let tiny = parse(&[("MAX_STORE_BYTES", "5")]).unwrap();
        assert_eq!(tiny.max_log_bytes, 129, "room for one entry and what it counts for");
        assert_eq!(tiny.max_entry_bytes, 1, "no larger than the log holds");
        assert_eq!(config.max_stores_per_account, 10_000);
        assert_eq!(config.bind, IpAddr::from([0, 0, 0, 0]));
    }

    #[test]
    fn explicit_values() {
        let config = parse(&[
            ("PORT", "0"),
            ("BIND", "::1"),
            ("QUOTA_BYTES", "1000"),
            ("REGISTRATION", "closed"),
            ("CORS_ORIGINS", "https://a.example, http://localhost:3000"),
            ("TRUST_PROXY", "1"),
            ("UNRELATED", "x"),
            ("SESSION_TTL_DAYS", " "),
        ])
        .unwrap();
        assert_eq!(config.port, 0);
        assert_eq!(config.bind, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(config.quota_bytes, Some(1000));
        assert_eq!(config.registration, Registration::Closed);
        assert_eq!(
            config.cors_origins,
            CorsOrigins::List(vec!["https://a.example".into(), "http://localhost:3000".into()])
        );
        assert!(config.trust_proxy.trusts("127.0.0.1".parse().unwrap()));
        assert_eq!(config.session_ttl_days, 30);
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(failing_variable(&[("PORT", "http")]), "PORT");
        assert_eq!(failing_variable(&[("PORT", "65536")]), "PORT");
        assert_eq!(failing_variable(&[("PORT", "-1")]), "PORT");
        assert_eq!(failing_variable(&[("BIND", "localhost")]), "BIND");
        assert_eq!(failing_variable(&[("MAX_STORE_BYTES", "0")]), "MAX_STORE_BYTES");
        assert_eq!(failing_variable(&[("QUOTA_BYTES", "1e6")]), "QUOTA_BYTES");
        assert_eq!(failing_variable(&[("REGISTRATION", "Open")]), "REGISTRATION");
        assert_eq!(failing_variable(&[("REGISTRATION", "invited")]), "REGISTRATION");
        assert_eq!(failing_variable(&[("SESSION_TTL_DAYS", "0")]), "SESSION_TTL_DAYS");
        assert_eq!(failing_variable(&[("CORS_ORIGINS", "a.example")]), "CORS_ORIGINS");
        assert_eq!(failing_variable(&[("CORS_ORIGINS", "https://a.example,")]), "CORS_ORIGINS");
        assert_eq!(failing_variable(&[("PBKDF2_ITERATIONS", "999")]), "PBKDF2_ITERATIONS");
        assert_eq!(failing_variable(&[("TRUST_PROXY", "yes")]), "TRUST_PROXY");
        assert_eq!(failing_variable(&[("ACCESS_LOG", "on")]), "ACCESS_LOG");
        assert_eq!(failing_variable(&[("MAX_CONNECTIONS", "0")]), "MAX_CONNECTIONS");
        assert_eq!(failing_variable(&[("MAX_CONNECTIONS_PER_ADDRESS", "0")]), "MAX_CONNECTIONS_PER_ADDRESS");
        assert_eq!(failing_variable(&[("MIN_FREE_BYTES", "-1")]), "MIN_FREE_BYTES");
        assert_eq!(failing_variable(&[("MAX_ENTRY_BYTES", "0")]), "MAX_ENTRY_BYTES");
        assert_eq!(failing_variable(&[("MAX_ENTRY_BYTES", "4194305")]), "MAX_ENTRY_BYTES");
        assert_eq!(failing_variable(&[("MAX_LOG_BYTES", "x")]), "MAX_LOG_BYTES");
        assert_eq!(failing_variable(&[("MAX_ENTRY_BYTES", "2000"), ("MAX_LOG_BYTES", "2100")]), "MAX_ENTRY_BYTES");
        assert_eq!(failing_variable(&[("MAX_LOG_BYTES", "128")]), "MAX_LOG_BYTES");
        assert_eq!(failing_variable(&[("MAX_STORES_PER_ACCOUNT", "0")]), "MAX_STORES_PER_ACCOUNT");
        assert_eq!(failing_variable(&[("MAX_ENTRY_BYTES", "2000"), ("MAX_STORE_BYTES", "10")]), "MAX_ENTRY_BYTES");
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_values_never_panics(values in proptest::collection::vec("\\PC{0,30}", VARIABLES.len())) {
            let pairs = VARIABLES.iter().zip(values).map(|((name, _, _), value)| (name.to_string(), value));
            match Config::from_pairs(pairs) {
                Ok(_) => {}
                Err(err) => proptest::prop_assert!(VARIABLES.iter().any(|(name, _, _)| *name == err.variable)),
            }
        }

        #[test]
        fn numbers_parse_exactly_within_their_range(port in 0u32..70_000, days in 0u32..4000) {
            let config = parse(&[("PORT", &port.to_string()), ("SESSION_TTL_DAYS", &days.to_string())]);
            match config {
                Ok(config) => {
                    proptest::prop_assert_eq!(u32::from(config.port), port);
                    proptest::prop_assert_eq!(config.session_ttl_days, days);
                }
                Err(err) if port > 65_535 => proptest::prop_assert_eq!(err.variable, "PORT"),
                Err(err) => {
                    proptest::prop_assert!(!(1..=3650).contains(&days));
                    proptest::prop_assert_eq!(err.variable, "SESSION_TTL_DAYS");
                }
            }
        }
    }
}
