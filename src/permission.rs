//! The three permission levels and the one check every store operation uses.

use crate::error::ApiError;

/// `READ` < `WRITE` < `OWN`; each includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    Read,
    Write,
    Own,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "READ",
            Permission::Write => "WRITE",
            Permission::Own => "OWN",
        }
    }

    pub fn parse(text: &str) -> Option<Permission> {
        match text {
            "READ" => Some(Permission::Read),
            "WRITE" => Some(Permission::Write),
            "OWN" => Some(Permission::Own),
            _ => None,
        }
    }
}

/// Whether a caller holding `held` on an existing store may do what needs
/// `needed`: no permission at all hides the store (404), too little is 403.
pub fn require(held: Option<Permission>, needed: Permission) -> Result<Permission, ApiError> {
    match held {
        None => Err(ApiError::NotFound),
        Some(held) if held >= needed => Ok(held),
        Some(_) => Err(ApiError::Forbidden("Your permission on this store does not allow that.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_include_lower_ones() {
        assert!(require(Some(Permission::Own), Permission::Write).is_ok());
        assert!(require(Some(Permission::Write), Permission::Read).is_ok());
        assert_eq!(require(Some(Permission::Read), Permission::Write).unwrap_err().status_and_code().0, 403);
        assert_eq!(require(Some(Permission::Write), Permission::Own).unwrap_err().status_and_code().0, 403);
        assert_eq!(require(None, Permission::Read).unwrap_err().status_and_code().0, 404);
    }

    #[test]
    fn names_round_trip() {
        for p in [Permission::Read, Permission::Write, Permission::Own] {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        assert_eq!(Permission::parse("own"), None);
    }
}
