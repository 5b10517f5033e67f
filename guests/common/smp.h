/* Starting application processors through the local APIC (header-only): INIT, then
 * two SIPIs to the real-mode trampoline of entry.S, copied to 0x8000. An AP started
 * this way enters long mode, calls ap_main() and halts. */
#ifndef SMP_H
#define SMP_H

#include "guest.h"

#define LAPIC_BASE 0xfee00000UL
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define ICR_INIT 0x00004500 /* INIT, level assert */
#define ICR_SIPI 0x00004600 /* start-up */
#define ICR_BUSY (1 << 12)  /* delivery status: send pending */
#define TRAMPOLINE 0x8000UL

extern char ap_tramp_start[], ap_tramp_end[];

static inline void lapic_write(u32 reg, u32 v) { *(volatile u32 *)(LAPIC_BASE + reg) = v; }
static inline u32 lapic_read(u32 reg) { return *(volatile u32 *)(LAPIC_BASE + reg); }

static inline void send_ipi(u32 dest, u32 icr)
{
    lapic_write(LAPIC_ICR_HI, dest << 24);
    lapic_write(LAPIC_ICR_LO, icr);
    while (lapic_read(LAPIC_ICR_LO) & ICR_BUSY)
        cpu_relax();
}

/* Copies the AP trampoline into low memory; call once before start_ap(). */
static inline void install_trampoline(void)
{
    memcpy((void *)TRAMPOLINE, ap_tramp_start, (u64)(ap_tramp_end - ap_tramp_start));
}

/* Sends INIT, SIPI, SIPI to the CPU with APIC id `ap`. */
static inline void start_ap(u32 ap)
{
    send_ipi(ap, ICR_INIT);
    send_ipi(ap, ICR_SIPI | (TRAMPOLINE >> 12));
    send_ipi(ap, ICR_SIPI | (TRAMPOLINE >> 12));
}

#endif
