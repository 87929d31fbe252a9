//! The three permission levels (a plain value: the check that turns too
//! little into an HTTP error is `api::require`).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in [Permission::Read, Permission::Write, Permission::Own] {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        assert_eq!(Permission::parse("own"), None);
    }
}
