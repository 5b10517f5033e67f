/* echo: reads COM1 by polling and echoes every byte back in upper case; a '.'
 * resets the machine. Exercises the console's input path (stdin -> guest). */
#include "common/guest.h"

#define LSR 5
#define LSR_DATA_READY 0x01

void guest_main(const char *cmdline)
{
    (void)cmdline;
    puts("echo: ready\n");
    for (;;) {
        while (!(inb(COM1 + LSR) & LSR_DATA_READY))
            cpu_relax();
        char c = (char)inb(COM1);
        if (c == '.') {
            puts("\necho: bye\n");
            reset();
        }
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        putc(c);
    }
}
