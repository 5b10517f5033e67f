/* Serial output, command-line parsing and reset for the test guests. */
#include "guest.h"

/* 16550 at COM1: wait for the transmit holding register to be empty (LSR bit 5). */
void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))
        cpu_relax();
    outb(COM1, (u8)c);
}

void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

void put_hex(u64 v)
{
    for (int shift = 60; shift >= 0; shift -= 4)
        putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

void put_dec(u64 v)
{
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    puts(&buf[i]);
}

u64 cmdline_u64(const char *cmdline, const char *key, u64 def)
{
    if (!cmdline)
        return def;
    for (const char *p = cmdline; *p; p++) {
        if (p != cmdline && p[-1] != ' ')
            continue;
        const char *k = key, *q = p;
        while (*k && *q == *k) {
            k++;
            q++;
        }
        if (*k || *q < '0' || *q > '9')
            continue;
        u64 v = 0;
        while (*q >= '0' && *q <= '9')
            v = v * 10 + (u64)(*q++ - '0');
        return v;
    }
    return def;
}

void reset(void)
{
    outb(0x64, 0xfe);
    halt_forever();
}

void *memcpy(void *d, const void *s, u64 n)
{
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return d;
}

void *memset(void *d, int c, u64 n)
{
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return d;
}

/* Guests without application processors never see ap_main called. */
void __attribute__((weak)) ap_main(void) {}
