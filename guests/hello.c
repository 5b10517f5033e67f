/* hello: prints its command line (read through boot_params or PVH start_info), the
 * result of an ALU loop, and resets through the i8042. */
#include "common/guest.h"

#define ROUNDS 4096

/* Mixes shifts, rotates, multiplication, division, carries and conditionals so a
 * wrong flag or ALU result anywhere changes the checksum. */
static u64 checksum(void)
{
    u64 h = 0xcbf29ce484222325UL;
    u32 carries = 0;
    for (u64 i = 0; i < ROUNDS; i++) {
        u64 prev = h;
        h ^= i;
        h *= 0x100000001b3UL;
        h = (h << 13) | (h >> 51);
        h += prev;
        carries += h < prev;
        if (i % 7 == 3)
            h ^= h / (i | 1);
        h -= (prev >> 58) * 0x9e37;
    }
    return h ^ carries;
}

void guest_main(const char *cmdline)
{
    puts("hello: cmdline=\"");
    puts(cmdline ? cmdline : "");
    puts("\"\n");
    puts("hello: checksum=0x");
    put_hex(checksum());
    puts("\nhello: resetting\n");
    reset();
}
