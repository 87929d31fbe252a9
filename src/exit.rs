//! Why a command stops early: one line for the operator and the exit code
//! SPEC §7/§8 gives that kind of failure.

use std::fmt;
use std::process::ExitCode;

/// A failure that ends the command, with its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Exit 1: the command could not do its job (a data directory in use,
    /// missing, or of another schema version).
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure { code: 1, message: message.into() }
    }

    /// Exit 2: a usage or configuration error; retrying will not help.
    pub fn config(message: impl Into<String>) -> Failure {
        Failure { code: 2, message: message.into() }
    }

    /// Exit 3: a start failure that may pass by itself (the port is in use,
    /// the address is not assigned yet); a service manager should retry.
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure { code: 3, message: message.into() }
    }

    /// Prints the line and gives the exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("sync-node: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
