/* smp: the boot CPU starts the application processors one at a time through its
 * local APIC (INIT, then SIPI to a real-mode trampoline it copies to 0x8000); each AP
 * takes a ticket from a shared counter with `lock xadd`, prints its APIC id and the
 * ticket, and halts. Starting them one by one keeps the output deterministic.
 * `cpus=N` (default 2) says how many CPUs the machine has. */
#include "common/guest.h"
#include "common/smp.h"

#define MAX_CPUS 9
/* About two seconds at 2 GHz or more. */
#define AP_TIMEOUT_CYCLES 4000000000UL

/* Tickets taken (lock xadd) and APs finished printing. */
static volatile u32 tickets;
static volatile u32 aps_done;

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
    install_trampoline();

    for (u32 ap = 1; ap < cpus; ap++) {
        start_ap(ap);
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
