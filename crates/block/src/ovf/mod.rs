//! OVF appliances (`hako img import`): parsing the descriptor and the manifest, the
//! two pieces of an appliance that are untrusted text. Pure functions of their input,
//! so they are fuzzed (`block::fuzz::fuzz_ovf`); reading the archive, checking digests
//! and converting disks is the importer's.

pub mod descriptor;
pub mod manifest;

pub use descriptor::{parse_ovf, parse_units, Ovf, OvfDisk, OvfFile};
pub use manifest::{parse_manifest, Algo, Manifest};

/// Why a descriptor or manifest was refused: one line (and the XML parser's error
/// as the cause, for a descriptor that is not XML).
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct OvfError {
    msg: String,
    #[source]
    source: Option<roxmltree::Error>,
}

impl OvfError {
    fn new(msg: String) -> Self {
        OvfError { msg, source: None }
    }
}

/// Results of the OVF parsers.
pub type Result<T> = std::result::Result<T, OvfError>;

/// Fails with a formatted message.
macro_rules! fail {
    ($($t:tt)*) => {
        return Err($crate::ovf::OvfError::new(format!($($t)*)))
    };
}
pub(crate) use fail;

/// `ctx(|| message)`: an absent value or a failed conversion as an [`OvfError`].
pub(crate) trait Ctx<T> {
    fn ctx(self, msg: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Ctx<T> for Option<T> {
    fn ctx(self, msg: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| OvfError::new(msg()))
    }
}

impl<T, E: std::fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, msg: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| OvfError::new(format!("{}: {e}", msg())))
    }
}
