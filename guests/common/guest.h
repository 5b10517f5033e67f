/* The tiny runtime every test guest links with (lib.c, entry.S). */
#ifndef GUEST_H
#define GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

#define COM1 0x3f8

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u64 rdtsc(void) { u32 lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((u64)hi << 32) | lo; }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline u32 atomic_fetch_add(volatile u32 *p, u32 v)
{
    __asm__ volatile("lock xaddl %0, %1" : "+r"(v), "+m"(*p) : : "memory");
    return v;
}
/* CPUID as a serializing instruction. */
static inline void serialize(void)
{
    u32 a = 0, b, c = 0, d;
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d) : : "memory");
}
/* The initial APIC id of the running CPU (CPUID.1:EBX[31:24]). */
static inline u32 apic_id(void)
{
    u32 a = 1, b, c = 0, d;
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    return b >> 24;
}

void putc(char c);
void puts(const char *s);
void put_hex(u64 v);
void put_dec(u64 v);
/* The number after `key` (e.g. "count=") in the command line, or `def`. */
u64 cmdline_u64(const char *cmdline, const char *key, u64 def);
/* Resets the machine through the i8042 (0xfe to port 0x64); never returns. */
void __attribute__((noreturn)) reset(void);
void __attribute__((noreturn)) halt_forever(void);
void *memcpy(void *d, const void *s, u64 n);
void *memset(void *d, int c, u64 n);

void guest_main(const char *cmdline);
void ap_main(void);

#endif
