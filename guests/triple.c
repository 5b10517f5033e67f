/* triple: loads an empty IDT and executes ud2: #UD cannot be delivered, nor the
 * resulting #GP and #DF, so the CPU shuts down (triple fault). */
#include "common/guest.h"

void guest_main(const char *cmdline)
{
    (void)cmdline;
    struct __attribute__((packed)) {
        u16 limit;
        u64 base;
    } idtr = { 0, 0 };
    puts("triple: faulting\n");
    __asm__ volatile("lidt %0\n\tud2" : : "m"(idtr));
    puts("triple: still alive?\n");
    halt_forever();
}
