//! Disk images behind one trait: raw files and qcow2.
//!
//! Devices (virtio-blk) and tools (`hako img`) see a [`Disk`]; the format is chosen
//! when the image is opened.

pub mod disk;

pub use disk::{Disk, DiskError};
