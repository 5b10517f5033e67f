/* migrate: the guest of the snapshot and migration tests, after QEMU's migration
 * test. Forever: add 1 to the first byte of every 4 KiB page from 4 MiB up to
 * `mb=N` MiB (default 32), then print `migrate: pass P sum S`, where P counts the
 * passes and S is the sum of every page's byte read back during the pass, then wait
 * about `spin=N` TSC ticks (default 2000000) before the next pass.
 *
 * A VM stopped at any moment holds pages whose bytes never increase from one page to
 * the next, with at most one step (the page the pass had reached) where they drop by
 * one; the last printed P is either the value of the last page or one less. After a
 * restore or a migration the passes continue from P+1 with no gap, and S stays
 * pages * (P mod 256) only if every page's byte moved with the VM. */
#include "common/guest.h"

#define PAGE 4096
#define START (4ull << 20)

void guest_main(const char *cmdline)
{
    u64 mb = cmdline_u64(cmdline, "mb=", 32);
    u64 spin = cmdline_u64(cmdline, "spin=", 2000000);
    if (mb < 5 || mb > 3072) {
        puts("migrate: mb= must be 5..3072\n");
        reset();
    }
    volatile u8 *base = (volatile u8 *)START;
    u64 pages = ((mb << 20) - START) / PAGE;
    puts("migrate: pages=");
    put_dec(pages);
    puts("\n");
    for (u64 pass = 1;; pass++) {
        u32 sum = 0;
        for (u64 i = 0; i < pages; i++) {
            u8 v = base[i * PAGE] + 1;
            base[i * PAGE] = v;
            sum += v;
        }
        puts("migrate: pass ");
        put_dec(pass);
        puts(" sum ");
        put_dec(sum);
        puts("\n");
        u64 t0 = rdtsc();
        while (rdtsc() - t0 < spin)
            cpu_relax();
    }
}
