//! The errors of the VMM's lifecycle commands, each with the HTTP status the control
//! API answers it with.

use crate::handle::RunState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command does not apply to the VM's current state (HTTP 409).
    #[error("the VM is {state}; {action} needs it {needs}")]
    WrongState {
        state: RunState,
        action: &'static str,
        needs: &'static str,
    },
    /// The request itself is wrong (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// The vCPUs did not stop in time (HTTP 500; the VM keeps running).
    #[error("the vCPUs did not pause within {0} ms; the VM keeps running")]
    PauseTimeout(u64),
    /// Anything else (HTTP 500).
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl Error {
    /// The HTTP status code that describes this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::WrongState { .. } => 409,
            Error::BadRequest(_) => 400,
            Error::PauseTimeout(_) | Error::Failed(_) => 500,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
