//! The daemon's errors, each with the HTTP status the API answers it with.

use crate::definition::DefinitionError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no VM named '{0}'")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// 404 for an unknown VM, 409 for what its state does not allow, 400 for a
    /// malformed request, 500 for what failed on the host.
    pub fn status(&self) -> u16 {
        match self {
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            Error::Definition(_) | Error::BadRequest(_) => 400,
            Error::Io { .. } | Error::Failed(_) => 500,
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
