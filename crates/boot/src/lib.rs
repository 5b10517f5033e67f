//! Linux boot: kernel/initrd loading, boot_params, e820, page tables and GDT
//! for the 64-bit entry; Multiboot v1 kernels for the 32-bit entry; and the ACPI
//! tables describing the platform.
//! Produces guest-memory contents and the boot vCPU's state; never runs a vCPU.

pub mod acpi;
pub mod e820;
pub mod layout;
pub mod linux;
pub mod long_mode;
pub mod multiboot;
pub mod protected_mode;

pub use layout::{guest_ram_ranges, MemoryLayout};
pub use linux::{load_linux, BootError, BootInfo, LinuxBootConfig};

/// Guest RAM as the boot code sees it (the same type the accelerators share).
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;
