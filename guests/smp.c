/* smp: the boot CPU starts the application processors one at a time through its
 * local APIC (INIT, then SIPI to a real-mode trampoline it copies to 0x8000); each AP
 * takes a ticket from a shared counter with `lock xadd`, prints its APIC id and the
 * ticket, and halts. Starting them one by one keeps the output deterministic.
 * `cpus=N` (default 2) says how many CPUs the machine has. */
#include "common/guest.h"

#define LAPIC_BASE 0xfee00000UL
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define ICR_INIT 0x00004500 /* INIT, level assert */
#define ICR_SIPI 0x00004600 /* start-up */
#define ICR_BUSY (1 << 12)  /* delivery status: send pending */
#define TRAMPOLINE 0x8000UL
#define MAX_CPUS 9
/* About two seconds at 2 GHz or more. */
#define AP_TIMEOUT_CYCLES 4000000000UL

extern char ap_tramp_start[], ap_tramp_end[];

/* Tickets taken (lock xadd) and APs finished printing. */
static volatile u32 tickets;
static volatile u32 aps_done;

static void lapic_write(u32 reg, u32 v) { *(volatile u32 *)(LAPIC_BASE + reg) = v; }
static u32 lapic_read(u32 reg) { return *(volatile u32 *)(LAPIC_BASE + reg); }

static void send_ipi(u32 dest, u32 icr)
{
    lapic_write(LAPIC_ICR_HI, dest << 24);
    lapic_write(LAPIC_ICR_LO, icr);
    while (lapic_read(LAPIC_ICR_LO) & ICR_BUSY)
        cpu_relax();
}

void ap_main(void)
{
    u32 ticket = atomic_fetch_add(&tickets, 1);
    puts("smp: AP ");
    put_dec(apic_id());
    puts(" up, ticket ");
    put_dec(ticket);
    puts("\n");
    atomic_fetch_add(&aps_done, 1);
}

void guest_main(const char *cmdline)
{
    u64 cpus = cmdline_u64(cmdline, "cpus=", 2);
    if (cpus < 1 || cpus > MAX_CPUS)
        cpus = 2;
    puts("smp: BSP ");
    put_dec(apic_id());
    puts(", starting ");
    put_dec(cpus - 1);
    puts(" APs\n");
    memcpy((void *)TRAMPOLINE, ap_tramp_start, (u64)(ap_tramp_end - ap_tramp_start));

    for (u32 ap = 1; ap < cpus; ap++) {
        send_ipi(ap, ICR_INIT);
        send_ipi(ap, ICR_SIPI | (TRAMPOLINE >> 12));
        send_ipi(ap, ICR_SIPI | (TRAMPOLINE >> 12));
        u64 start = rdtsc();
        while (aps_done < ap) {
            if (rdtsc() - start > AP_TIMEOUT_CYCLES) {
                puts("smp: AP ");
                put_dec(ap);
                puts(" did not start\n");
                reset();
            }
            cpu_relax();
        }
    }
    puts("smp: total=");
    put_dec(tickets + 1);
    puts(" CPUs\n");
    reset();
}
