/* outloop: `count=N` (default 100000) byte writes to port 0x80, a port no device
 * answers; each is one VM exit. For the exit benchmark (bench/kvm-exits.sh). */
#include "common/guest.h"

void guest_main(const char *cmdline)
{
    u64 n = cmdline_u64(cmdline, "count=", 100000);
    puts("outloop: count=");
    put_dec(n);
    puts("\n");
    if (n) {
        __asm__ volatile("1: outb %%al, $0x80\n\t"
                         "dec %0\n\t"
                         "jnz 1b"
                         : "+c"(n)
                         : "a"(0)
                         : "memory", "cc");
    }
    puts("outloop: done\n");
    reset();
}
