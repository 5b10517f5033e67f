//! Disk images behind one trait: raw files and qcow2 (read and write), VDI, VHD, VHDX
//! and VMDK (read-only as disks); VHD, VHDX and streamOptimized VMDK images can also be
//! written in one go ([`writer`], `hako img convert`).
//!
//! Devices (virtio-blk) and tools (`hako img`) see a [`Disk`]; the format is chosen
//! when the image is opened ([`open`]), given or probed (see [`open`](mod@open) for the
//! probing safety rule).

pub mod disk;
pub mod fuzz;
pub mod info;
pub mod open;
pub mod ovf;
pub mod qcow2;
pub mod raw;
pub mod storage;
pub mod structure;
pub mod vdi;
pub mod vhdx;
pub mod vmdk;
pub mod vpc;
pub mod writer;

pub use disk::{BlockStatus, Disk, DiskError, Extent};
pub use open::{open, probe, BackingPolicy, ImageFormat, OpenOptions};
pub use qcow2::Qcow2Disk;
pub use raw::RawDisk;
pub use vdi::VdiDisk;
pub use vhdx::{VhdxDisk, VhdxWriter};
pub use vmdk::VmdkDisk;
pub use vpc::{VpcDisk, VpcWriter};
pub use writer::ImageWriter;
