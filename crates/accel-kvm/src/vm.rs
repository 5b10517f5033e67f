//! [`KvmVm`]: a KVM virtual machine with the in-kernel irqchip and PIT.

use std::sync::{Arc, Mutex};

use accel::{Error, GuestMemory, Result};
use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_irqchip, kvm_msi, kvm_pit_config,
    kvm_userspace_memory_region, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend as _, GuestMemoryRegion};
use vmm_types::dirty::DirtyLog;
use vmm_types::{CpuidEntry, VmState};

use crate::caps::CAPS;
use crate::state::{vm as vmstate, Support};
use crate::vcpu::KvmVcpu;
use crate::{cpuid, errno_err, kick};

/// The KVM API version this code speaks (`KVM_GET_API_VERSION`).
pub const KVM_API_VERSION: i32 = 12;
/// Guest-physical address of the three pages Intel VMX needs for the real-mode TSS
/// (`KVM_SET_TSS_ADDR`). The platform must not put RAM or MMIO at
/// [`KVM_IDENTITY_MAP_ADDR`]..[`KVM_TSS_ADDR`]+3 pages.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// Guest-physical address of the identity-map page table page for real mode on VMX
/// (`KVM_SET_IDENTITY_MAP_ADDR`), just below [`KVM_TSS_ADDR`].
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

/// The KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// Opens /dev/kvm with an error message a person can act on.
pub(crate) fn open_kvm() -> Result<Kvm> {
    open_kvm_at(KVM_DEVICE)
}

/// Opens the KVM device at `path`.
pub(crate) fn open_kvm_at(path: &str) -> Result<Kvm> {
    let c_path = std::ffi::CString::new(path)
        .map_err(|_| Error::Unavailable(format!("bad KVM device path {path:?}")))?;
    Kvm::new_with_path(&c_path).map_err(|e| open_error(path, e))
}

/// The error for a failed open of the KVM device, worded for what can be done about it.
fn open_error(path: &str, e: kvm_ioctls::Error) -> Error {
    match e.errno() {
        libc::ENOENT => Error::Unavailable(format!(
            "{path} does not exist: the kvm module is not loaded or the host has no \
             hardware virtualization (try --accel emu)"
        )),
        libc::EACCES | libc::EPERM => Error::Unavailable(format!(
            "permission denied opening {path}: add the user to the group owning it \
             (usually `kvm`) or run as root"
        )),
        _ => errno_err("opening the KVM device", e),
    }
}

/// Checks that an opened KVM device speaks our API version and has every
/// capability the VMM requires.
pub(crate) fn check_kvm(kvm: &Kvm, path: &str) -> Result<()> {
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(Error::Unavailable(format!(
            "{path} speaks KVM API version {version}, this VMM needs {KVM_API_VERSION}"
        )));
    }
    let missing: Vec<&str> = CAPS
        .iter()
        .filter(|c| c.required && !kvm.check_extension(c.cap))
        .map(|c| c.name)
        .collect();
    if !missing.is_empty() {
        return Err(Error::Unavailable(format!(
            "{path} lacks required capabilities: {}",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// A KVM virtual machine: guest memory registered as memory slots, the in-kernel
/// PIC/IOAPIC/LAPICs and PIT, and the CPUID/MSR tables its vCPUs start from.
pub struct KvmVm {
    kvm: Kvm,
    fd: Arc<VmFd>,
    /// Keeps the guest RAM mapped for as long as KVM may touch it.
    mem: GuestMemory,
    /// Where `sync_dirty_log` puts KVM's dirty bitmaps while logging is on.
    dirty: Mutex<Option<Arc<DirtyLog>>>,
    num_cpus: u32,
    supported_cpuid: Vec<kvm_cpuid_entry2>,
    /// MSRs KVM can save and restore (`KVM_GET_MSR_INDEX_LIST`).
    msr_index_list: Vec<u32>,
    /// The CPUID baseline vCPUs created from now on are restricted to, if any.
    baseline: Mutex<Option<Vec<CpuidEntry>>>,
    /// The TSC rate vCPUs created from now on run at (None: the host's).
    tsc_khz: Mutex<Option<u32>>,
}

impl KvmVm {
    /// Creates a VM over `mem` that will have `num_cpus` vCPUs (ids 0..num_cpus).
    pub fn new(mem: GuestMemory, num_cpus: u32) -> Result<KvmVm> {
        let kvm = open_kvm()?;
        check_kvm(&kvm, KVM_DEVICE)?;
        let max_vcpus = kvm.get_max_vcpus();
        if num_cpus == 0 || num_cpus as usize > max_vcpus {
            return Err(Error::InvalidState(format!(
                "{num_cpus} vCPUs requested; KVM allows 1 to {max_vcpus}"
            )));
        }

        let fd = create_vm(&kvm)?;
        if kvm.check_extension(Cap::SetIdentityMapAddr) {
            fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
                .map_err(|e| errno_err("KVM_SET_IDENTITY_MAP_ADDR", e))?;
        }
        if kvm.check_extension(Cap::SetTssAddr) {
            fd.set_tss_address(KVM_TSS_ADDR as usize)
                .map_err(|e| errno_err("KVM_SET_TSS_ADDR", e))?;
        }
        fd.create_irq_chip()
            .map_err(|e| errno_err("KVM_CREATE_IRQCHIP", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit)
            .map_err(|e| errno_err("KVM_CREATE_PIT2", e))?;

        set_memory_slots(&fd, &mem, 0)?;

        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| errno_err("KVM_GET_SUPPORTED_CPUID", e))?
            .as_slice()
            .to_vec();
        let msr_index_list = kvm
            .get_msr_index_list()
            .map_err(|e| errno_err("KVM_GET_MSR_INDEX_LIST", e))?
            .as_slice()
            .to_vec();
        kick::install_handler().map_err(|source| Error::Os {
            what: "installing the vCPU kick signal handler",
            source,
        })?;

        Ok(KvmVm {
            kvm,
            fd: Arc::new(fd),
            mem,
            dirty: Mutex::new(None),
            num_cpus,
            supported_cpuid,
            msr_index_list,
            baseline: Mutex::new(None),
            tsc_khz: Mutex::new(None),
        })
    }

    /// Restricts the CPUID of vCPUs created from now on to `baseline` (for example
    /// `emu`'s table, so the guest can later move there): see
    /// [`cpuid::restrict_to`]. `None` shows the host's features (the default).
    /// Makes vCPUs created from now on count their TSC at `khz` (KVM_SET_TSC_KHZ),
    /// e.g. emu's 1 GHz for a VM that may move there. Returns false (and changes
    /// nothing) where KVM cannot scale the TSC (no KVM_CAP_TSC_CONTROL).
    pub fn set_tsc_khz(&self, khz: Option<u32>) -> bool {
        if khz.is_some() && !self.kvm.check_extension(Cap::TscControl) {
            return false;
        }
        *self.tsc_khz.lock().unwrap_or_else(|e| e.into_inner()) = khz;
        true
    }

    pub fn set_cpuid_baseline(&self, baseline: Option<Vec<CpuidEntry>>) {
        *self.baseline.lock().unwrap_or_else(|e| e.into_inner()) = baseline;
    }

    fn support(&self) -> Support {
        Support {
            xsave: self.kvm.check_extension(Cap::Xsave),
            xcrs: self.kvm.check_extension(Cap::Xcrs),
            vcpu_events: self.kvm.check_extension(Cap::VcpuEvents),
            debugregs: self.kvm.check_extension(Cap::Debugregs),
        }
    }

    /// The table vCPU `id` is given.
    fn vcpu_cpuid(&self, id: u32) -> Vec<kvm_cpuid_entry2> {
        let mut t = cpuid::guest_cpuid(&self.supported_cpuid, id, self.num_cpus);
        if let Some(b) = self
            .baseline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
        {
            cpuid::restrict_to(&mut t, b);
        }
        t
    }

    fn get_irqchip(&self, chip_id: u32) -> Result<kvm_irqchip> {
        let mut c = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        self.fd
            .get_irqchip(&mut c)
            .map_err(|e| errno_err("KVM_GET_IRQCHIP", e))?;
        Ok(c)
    }

    /// The number of vCPUs this VM was created for.
    pub fn num_cpus(&self) -> u32 {
        self.num_cpus
    }

    /// The VM file descriptor, for features this crate does not wrap yet.
    pub fn vm_fd(&self) -> &VmFd {
        &self.fd
    }
}

/// `KVM_CREATE_VM`, retried when interrupted (the kernel documents EINTR for it).
/// Registers every region of `mem` as a memory slot (slot n = region n) with `flags`.
fn set_memory_slots(fd: &VmFd, mem: &GuestMemory, flags: u32) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| Error::InvalidState(format!("guest memory region: {e}")))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mapping of `memory_size` bytes owned by `mem`,
        // which the VM keeps (`KvmVm::mem`) until after the VM fd is closed.
        unsafe { fd.set_user_memory_region(r) }
            .map_err(|e| errno_err("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(())
}

fn create_vm(kvm: &Kvm) -> Result<VmFd> {
    loop {
        match kvm.create_vm() {
            Ok(fd) => return Ok(fd),
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(e) => return Err(errno_err("KVM_CREATE_VM", e)),
        }
    }
}

impl accel::Vm for KvmVm {
    fn accel_name(&self) -> &'static str {
        "kvm"
    }

    fn create_vcpu(&self, id: u32) -> Result<Box<dyn accel::Vcpu>> {
        if id >= self.num_cpus {
            return Err(Error::InvalidState(format!(
                "vCPU id {id} out of range: the VM has {} vCPUs",
                self.num_cpus
            )));
        }
        let mmap_size = self
            .kvm
            .get_vcpu_mmap_size()
            .map_err(|e| errno_err("KVM_GET_VCPU_MMAP_SIZE", e))?;
        let fd = self
            .fd
            .create_vcpu(u64::from(id))
            .map_err(|e| errno_err("KVM_CREATE_VCPU", e))?;
        if let Some(khz) = *self.tsc_khz.lock().unwrap_or_else(|e| e.into_inner()) {
            fd.set_tsc_khz(khz)
                .map_err(|e| errno_err("KVM_SET_TSC_KHZ (a TSC rate for --cpu portable)", e))?;
        }
        let table = self.vcpu_cpuid(id);
        let vcpu = KvmVcpu::new(
            fd,
            id,
            &table,
            &self.supported_cpuid,
            &self.msr_index_list,
            mmap_size,
            self.support(),
        )?;
        Ok(Box::new(vcpu))
    }

    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<()> {
        self.fd
            .set_irq_line(gsi, level)
            .map_err(|e| errno_err("KVM_IRQ_LINE", e))
    }

    fn signal_msi(&self, addr: u64, data: u32) -> Result<()> {
        let msi = kvm_msi {
            address_lo: addr as u32,
            address_hi: (addr >> 32) as u32,
            data,
            ..Default::default()
        };
        // Returns the number of CPUs the interrupt went to; 0 (blocked or no
        // destination) is not an error for the device raising it.
        self.fd
            .signal_msi(msi)
            .map(|_| ())
            .map_err(|e| errno_err("KVM_SIGNAL_MSI", e))
    }

    fn save_state(&self) -> Result<VmState> {
        let master = self.get_irqchip(KVM_IRQCHIP_PIC_MASTER)?;
        let slave = self.get_irqchip(KVM_IRQCHIP_PIC_SLAVE)?;
        let ioapic = self.get_irqchip(KVM_IRQCHIP_IOAPIC)?;
        let pit = self
            .fd
            .get_pit2()
            .map_err(|e| errno_err("KVM_GET_PIT2", e))?;
        let now = vmstate::monotonic_ns();
        let clock = self
            .fd
            .get_clock()
            .map_err(|e| errno_err("KVM_GET_CLOCK", e))?;
        // SAFETY: KVM_GET_IRQCHIP fills the union member `chip_id` selects: `pic`
        // for the two 8259s, `ioapic` for the IOAPIC; both are plain data.
        let (m, s, io) = unsafe { (master.chip.pic, slave.chip.pic, ioapic.chip.ioapic) };
        Ok(VmState {
            pic: vmm_types::PicState {
                master: vmstate::pic_from_kvm(&m, true),
                slave: vmstate::pic_from_kvm(&s, false),
            },
            ioapic: vmstate::ioapic_from_kvm(&io),
            pit: vmstate::pit_from_kvm(&pit, now),
            clock_ns: clock.clock,
        })
    }

    fn restore_state(&self, s: &VmState) -> Result<()> {
        // Validate everything before the first setter.
        let mut ioapic = self.get_irqchip(KVM_IRQCHIP_IOAPIC)?;
        // SAFETY: the IOAPIC chip's union member is `ioapic` (plain data).
        let mut io = unsafe { ioapic.chip.ioapic };
        vmstate::ioapic_to_kvm(&s.ioapic, &mut io).map_err(Error::InvalidState)?;
        ioapic.chip.ioapic = io;
        self.fd
            .set_clock(&kvm_clock_data {
                clock: s.clock_ns,
                ..Default::default()
            })
            .map_err(|e| errno_err("KVM_SET_CLOCK", e))?;
        for (chip_id, chip, master) in [
            (KVM_IRQCHIP_PIC_MASTER, &s.pic.master, true),
            (KVM_IRQCHIP_PIC_SLAVE, &s.pic.slave, false),
        ] {
            let mut c = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            c.chip.pic = vmstate::pic_to_kvm(chip, master);
            self.fd
                .set_irqchip(&c)
                .map_err(|e| errno_err("KVM_SET_IRQCHIP", e))?;
        }
        self.fd
            .set_irqchip(&ioapic)
            .map_err(|e| errno_err("KVM_SET_IRQCHIP", e))?;
        let mut pit = self
            .fd
            .get_pit2()
            .map_err(|e| errno_err("KVM_GET_PIT2", e))?;
        vmstate::pit_to_kvm(&s.pit, vmstate::monotonic_ns(), &mut pit);
        self.fd
            .set_pit2(&pit)
            .map_err(|e| errno_err("KVM_SET_PIT2", e))
    }

    fn cpuid(&self) -> Vec<CpuidEntry> {
        self.vcpu_cpuid(0).iter().map(cpuid::to_neutral).collect()
    }

    fn set_dirty_log(&self, log: Option<Arc<DirtyLog>>) -> Result<()> {
        let flags = if log.is_some() {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        };
        set_memory_slots(&self.fd, &self.mem, flags)?;
        *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) = log;
        Ok(())
    }

    fn sync_dirty_log(&self) -> Result<()> {
        let Some(log) = self.dirty.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        for (slot, region) in self.mem.iter().enumerate() {
            // KVM_GET_DIRTY_LOG returns the slot's bitmap and clears it.
            let bits = self
                .fd
                .get_dirty_log(slot as u32, region.len() as usize)
                .map_err(|e| errno_err("KVM_GET_DIRTY_LOG", e))?;
            log.mark_bitmap(region.start_addr().0, &bits);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_says_so() {
        let e = open_kvm_at("/nonexistent/kvm").err().unwrap();
        assert!(matches!(e, Error::Unavailable(_)));
        assert!(
            e.to_string().contains("/nonexistent/kvm does not exist"),
            "{e}"
        );
    }

    #[test]
    fn a_device_that_is_not_kvm_fails_the_version_check() {
        // /dev/null opens, but KVM_GET_API_VERSION fails on it.
        let kvm = open_kvm_at("/dev/null").unwrap();
        let e = check_kvm(&kvm, "/dev/null").unwrap_err();
        assert!(
            e.to_string()
                .contains("/dev/null speaks KVM API version -1"),
            "{e}"
        );
    }

    #[test]
    fn open_errors_say_what_to_do() {
        let e = open_error("/dev/kvm", kvm_ioctls::Error::new(libc::EACCES));
        assert!(matches!(e, Error::Unavailable(_)));
        assert!(
            e.to_string().contains("permission denied opening /dev/kvm"),
            "{e}"
        );
        let e = open_error("/dev/kvm", kvm_ioctls::Error::new(libc::EBUSY));
        assert!(matches!(e, Error::Os { .. }), "{e}");
    }
}
