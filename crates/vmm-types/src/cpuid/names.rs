//! Names of CPUID feature bits (Intel SDM Vol. 2A, CPUID; AMD APM Vol. 3 for the
//! 0x8000_0001 extensions), as Linux's /proc/cpuinfo spells most of them.

use super::Reg;

/// Names of the 32 bits of one feature register; "" where the bit has no name here.
#[rustfmt::skip]
pub(super) fn names(function: u32, index: u32, reg: Reg) -> [&'static str; 32] {
    let mut n = [""; 32];
    let set = |n: &mut [&'static str; 32], list: &[(u32, &'static str)]| {
        for &(b, s) in list {
            n[b as usize] = s;
        }
    };
    match (function, index, reg) {
        (1, _, Reg::Ecx) => set(&mut n, &[
            (0, "sse3"), (1, "pclmulqdq"), (2, "dtes64"), (3, "monitor"), (4, "ds_cpl"),
            (5, "vmx"), (6, "smx"), (7, "est"), (8, "tm2"), (9, "ssse3"), (10, "cnxt_id"),
            (11, "sdbg"), (12, "fma"), (13, "cx16"), (14, "xtpr"), (15, "pdcm"), (17, "pcid"),
            (18, "dca"), (19, "sse4_1"), (20, "sse4_2"), (21, "x2apic"), (22, "movbe"),
            (23, "popcnt"), (24, "tsc_deadline_timer"), (25, "aes"), (26, "xsave"),
            (28, "avx"), (29, "f16c"), (30, "rdrand"), (31, "hypervisor"),
        ]),
        (1, _, Reg::Edx) => set(&mut n, &[
            (0, "fpu"), (1, "vme"), (2, "de"), (3, "pse"), (4, "tsc"), (5, "msr"), (6, "pae"),
            (7, "mce"), (8, "cx8"), (9, "apic"), (11, "sep"), (12, "mtrr"), (13, "pge"),
            (14, "mca"), (15, "cmov"), (16, "pat"), (17, "pse36"), (18, "pn"), (19, "clflush"),
            (21, "ds"), (22, "acpi"), (23, "mmx"), (24, "fxsr"), (25, "sse"), (26, "sse2"),
            (27, "ss"), (29, "tm"), (30, "ia64"), (31, "pbe"),
        ]),
        (6, _, Reg::Eax) => set(&mut n, &[(0, "dtherm"), (1, "ida"), (2, "arat"), (4, "pln"), (6, "pts")]),
        (7, 0, Reg::Ebx) => set(&mut n, &[
            (0, "fsgsbase"), (1, "tsc_adjust"), (2, "sgx"), (3, "bmi1"), (4, "hle"), (5, "avx2"),
            (7, "smep"), (8, "bmi2"), (9, "erms"), (10, "invpcid"), (11, "rtm"), (14, "mpx"),
            (16, "avx512f"), (17, "avx512dq"), (18, "rdseed"), (19, "adx"), (20, "smap"),
            (21, "avx512ifma"), (23, "clflushopt"), (24, "clwb"), (26, "avx512pf"),
            (27, "avx512er"), (28, "avx512cd"), (29, "sha_ni"), (30, "avx512bw"), (31, "avx512vl"),
        ]),
        (7, 0, Reg::Ecx) => set(&mut n, &[
            (0, "prefetchwt1"), (1, "avx512vbmi"), (2, "umip"), (3, "pku"), (5, "waitpkg"),
            (6, "avx512_vbmi2"), (7, "shstk"), (8, "gfni"), (9, "vaes"), (10, "vpclmulqdq"),
            (11, "avx512_vnni"), (12, "avx512_bitalg"), (14, "avx512_vpopcntdq"), (16, "la57"),
            (22, "rdpid"), (25, "cldemote"), (27, "movdiri"), (28, "movdir64b"), (30, "sgx_lc"),
        ]),
        (7, 0, Reg::Edx) => set(&mut n, &[
            (2, "avx512_4vnniw"), (3, "avx512_4fmaps"), (4, "fsrm"), (8, "avx512_vp2intersect"),
            (10, "md_clear"), (14, "serialize"), (16, "tsxldtrk"), (18, "pconfig"), (20, "ibt"),
            (22, "amx_bf16"), (23, "avx512_fp16"), (24, "amx_tile"), (25, "amx_int8"),
            (26, "spec_ctrl"), (27, "intel_stibp"), (28, "flush_l1d"), (29, "arch_capabilities"),
            (30, "core_capabilities"), (31, "spec_ctrl_ssbd"),
        ]),
        (7, 1, Reg::Eax) => set(&mut n, &[(4, "avx_vnni"), (5, "avx512_bf16"), (10, "fzrm"), (11, "fsrs"), (12, "fsrc")]),
        (0xd, 0, Reg::Eax) => set(&mut n, &[
            (0, "xstate x87"), (1, "xstate sse"), (2, "xstate avx"), (3, "xstate bndregs"),
            (4, "xstate bndcsr"), (5, "xstate opmask"), (6, "xstate zmm_hi256"),
            (7, "xstate hi16_zmm"), (9, "xstate pkru"),
        ]),
        (0xd, 1, Reg::Eax) => set(&mut n, &[(0, "xsaveopt"), (1, "xsavec"), (2, "xgetbv1"), (3, "xsaves")]),
        (0x8000_0001, _, Reg::Ecx) => set(&mut n, &[
            (0, "lahf_lm"), (1, "cmp_legacy"), (2, "svm"), (3, "extapic"), (4, "cr8_legacy"),
            (5, "abm"), (6, "sse4a"), (7, "misalignsse"), (8, "3dnowprefetch"), (9, "osvw"),
            (10, "ibs"), (11, "xop"), (12, "skinit"), (13, "wdt"), (15, "lwp"), (16, "fma4"),
            (21, "tbm"), (22, "topoext"), (29, "mwaitx"),
        ]),
        (0x8000_0001, _, Reg::Edx) => set(&mut n, &[
            (11, "syscall"), (20, "nx"), (22, "mmxext"), (25, "fxsr_opt"), (26, "pdpe1gb"),
            (27, "rdtscp"), (29, "lm"), (30, "3dnowext"), (31, "3dnow"),
        ]),
        (0x8000_0007, _, Reg::Edx) => set(&mut n, &[(8, "constant_tsc (invariant TSC)")]),
        (0x4000_0001, _, Reg::Eax) => set(&mut n, &[
            (0, "kvmclock (old MSRs)"), (1, "kvm nopiodelay"), (2, "kvm mmu_op"),
            (3, "kvmclock"), (4, "kvm async_pf"), (5, "kvm steal_time"), (6, "kvm pv_eoi"),
            (7, "kvm pv_unhalt"), (9, "kvm pv_tlb_flush"), (10, "kvm async_pf_vmexit"),
            (11, "kvm pv_send_ipi"), (12, "kvm poll_control"), (13, "kvm pv_sched_yield"),
            (14, "kvm async_pf_int"), (15, "kvm msi_ext_dest_id"), (16, "kvm hc_map_gpa_range"),
            (17, "kvm migration_control"), (24, "kvmclock stable"),
        ]),
        _ => {}
    }
    n
}
