/*
 * testdev: a Multiboot v1 test kernel for QEMU's pc-testdev. It checks the
 * scratch register (ports 0xe0-0xe3, byte view 0xe8-0xeb), the flush-page port
 * (0xe4: memory keeps its contents), the 64 KiB MMIO window at 0xff000000, and
 * the IRQ-line ports (0x2000 + n) through the IOAPIC and the local APIC: a
 * level-triggered line the handler lowers, and an edge-triggered one. It ends
 * through isa-debug-exit (port 0x501) with 0x10 when every check passed, else
 * 0x11: exit status 0x21 or 0x23. `iret` on the command line makes the interrupt
 * handlers return with IRET (see the stubs below).
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define COM1 0x3f8
#define DEBUG_EXIT 0x501
#define IOAPIC 0xfec00000u
#define LAPIC 0xfee00000u
#define LEVEL_PIN 5
#define EDGE_PIN 7
#define LEVEL_VECTOR 0x35
#define EDGE_VECTOR 0x37
#define SPURIOUS_VECTOR 0xff

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))
        __asm__ volatile("pause");
    outb(COM1, (u8)c);
}

static void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

static void put_hex(u32 v, int digits)
{
    puts("0x");
    for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4)
        putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

static void put_dec(u32 v)
{
    char buf[11];
    int i = 10;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    puts(&buf[i]);
}

static u32 failures;

static void check(const char *what, u32 got, u32 want, int digits)
{
    puts("testdev: ");
    puts(what);
    puts(" = ");
    put_hex(got, digits);
    if (got != want) {
        puts(" (WRONG, want ");
        put_hex(want, digits);
        puts(")");
        failures++;
    }
    puts("\n");
}

/* Own GDT (the loader's may be gone) and IDT. */
static u64 gdt[3] = {
    0,
    0x00cf9b000000ffffull, /* 0x08: flat 32-bit code */
    0x00cf93000000ffffull, /* 0x10: flat data */
};
static u64 idt[256];
static struct __attribute__((packed)) { u16 limit; u32 base; } gdtr, idtr;

static void load_descriptor_tables(void)
{
    gdtr.limit = sizeof(gdt) - 1;
    gdtr.base = (u32)gdt;
    __asm__ volatile("lgdt %0\n\t"
                     "ljmp $0x08, $1f\n"
                     "1:\n\t"
                     "movw $0x10, %%ax\n\t"
                     "movw %%ax, %%ds\n\t"
                     "movw %%ax, %%es\n\t"
                     "movw %%ax, %%ss\n\t"
                     "movw %%ax, %%fs\n\t"
                     "movw %%ax, %%gs"
                     : : "m"(gdtr) : "eax", "memory");
    idtr.limit = sizeof(idt) - 1;
    idtr.base = (u32)idt;
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

static void set_gate(u8 vector, void (*handler)(void))
{
    u32 h = (u32)handler;
    /* Present, DPL 0, 32-bit interrupt gate, selector 0x08. */
    idt[vector] = (u64)(h & 0xffff) | (0x08ull << 16) | (0x8eull << 40) | ((u64)(h >> 16) << 48);
}

static volatile u32 level_irqs, edge_irqs, spurious_irqs;

static void mmio_write(u32 addr, u32 v) { *(volatile u32 *)addr = v; }

static void lapic_eoi(void) { mmio_write(LAPIC + 0xb0, 0); }

void on_level_irq(void)
{
    level_irqs++;
    outb(0x2000 + LEVEL_PIN, 0); /* lower the line before the EOI */
    lapic_eoi();
}

void on_edge_irq(void)
{
    edge_irqs++;
    lapic_eoi();
}

void on_spurious_irq(void) { spurious_irqs++; }

/*
 * Interrupt entry stubs. The handlers are C functions, which keep EBX, ESI, EDI
 * and EBP, so only EAX, ECX and EDX are saved (no PUSHA needed). Two ways back to
 * the interrupted code:
 *  - `*_ret` (the default): POPF then a far return, because on a PVM-backed
 *    /dev/kvm every guest supervisor instruction goes through KVM's instruction
 *    emulator, which has no protected-mode IRET ("instruction emulation failed");
 *  - `*_iret` (with `iret` on the command line): a plain IRET, as a real kernel does.
 */
#define STUB(name, handler)                                                  \
    "\n" #name "_ret: pushl %eax; pushl %ecx; pushl %edx; cld\n"             \
    "call " #handler "\n"                                                    \
    "popl %edx; popl %ecx; popl %eax\n"                                      \
    "pushl 8(%esp); popfl; lret $4\n"                                        \
    #name "_iret: pushl %eax; pushl %ecx; pushl %edx; cld\n"                 \
    "call " #handler "\n"                                                    \
    "popl %edx; popl %ecx; popl %eax; iret\n"
__asm__(".text" STUB(level, on_level_irq) STUB(edge, on_edge_irq) STUB(spurious, on_spurious_irq));
void level_ret(void), level_iret(void), edge_ret(void), edge_iret(void);
void spurious_ret(void), spurious_iret(void);

static void ioapic_route(u32 pin, u32 vector, int level)
{
    mmio_write(IOAPIC, 0x11 + 2 * pin);
    mmio_write(IOAPIC + 0x10, 0); /* destination: APIC ID 0 */
    mmio_write(IOAPIC, 0x10 + 2 * pin);
    mmio_write(IOAPIC + 0x10, vector | (level ? 1u << 15 : 0)); /* fixed, physical, active high, unmasked */
}

/* Interrupts on for a while (or until `*count` reaches `want`). */
static void wait_for(volatile u32 *count, u32 want)
{
    __asm__ volatile("sti");
    for (u32 i = 0; i < 2000000 && *count < want; i++)
        __asm__ volatile("pause");
    for (u32 i = 0; i < 20000; i++)
        __asm__ volatile("pause");
    __asm__ volatile("cli");
}

static void scratch(void)
{
    outl(0xe0, 0x12345678);
    check("scratch dword", inl(0xe0), 0x12345678, 8);
    check("scratch word at 0xe2", inw(0xe2), 0x1234, 4);
    check("scratch byte at 0xe9", inb(0xe9), 0x56, 2);
    outb(0xeb, 0xab);
    outw(0xe0, 0xcdef);
    check("scratch after byte and word writes", inl(0xe8), 0xab34cdef, 8);
}

static volatile u32 flushed = 0x600dcafe;

static void flush_page(void)
{
    outl(0xe4, (u32)&flushed);
    check("word in a flushed page", flushed, 0x600dcafe, 8);
    check("flush port reads", inl(0xe4), 0, 8);
}

static void iomem(void)
{
    volatile u8 *m = (volatile u8 *)0xff000000u;
    check("iomem before writes", *(volatile u32 *)(m + 0x40), 0, 8);
    *(volatile u32 *)(m + 0x40) = 0x11223344;
    *(volatile u8 *)(m + 0x41) = 0xaa;
    *(volatile u16 *)(m + 0xfffe) = 0xbeef;
    check("iomem dword", *(volatile u32 *)(m + 0x40), 0x1122aa44, 8);
    check("iomem byte", m[0x43], 0x11, 2);
    check("iomem last word", *(volatile u16 *)(m + 0xfffe), 0xbeef, 4);
}

static void irq_lines(int use_iret)
{
    set_gate(LEVEL_VECTOR, use_iret ? level_iret : level_ret);
    set_gate(EDGE_VECTOR, use_iret ? edge_iret : edge_ret);
    set_gate(SPURIOUS_VECTOR, use_iret ? spurious_iret : spurious_ret);
    /* Both PICs masked: interrupts come through the IOAPIC only. */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    mmio_write(LAPIC + 0xf0, 0x100 | SPURIOUS_VECTOR); /* APIC software-enabled */
    mmio_write(LAPIC + 0x80, 0);                       /* TPR: accept everything */
    ioapic_route(LEVEL_PIN, LEVEL_VECTOR, 1);
    ioapic_route(EDGE_PIN, EDGE_VECTOR, 0);

    outb(0x2000 + LEVEL_PIN, 1);
    wait_for(&level_irqs, 1);
    check("level line: interrupts (handler lowers the line)", level_irqs, 1, 2);

    outb(0x2000 + EDGE_PIN, 1);
    wait_for(&edge_irqs, 1);
    outb(0x2000 + EDGE_PIN, 0);
    outb(0x2000 + EDGE_PIN, 1);
    wait_for(&edge_irqs, 2);
    outb(0x2000 + EDGE_PIN, 0);
    check("edge line: interrupts for two rising edges", edge_irqs, 2, 2);
    check("irq port reads", inb(0x2000 + EDGE_PIN), 0, 2);
    check("spurious interrupts", spurious_irqs, 0, 2);
}

/* Whether the word `w` appears in the Multiboot command line. */
static int has_word(const u32 *mbi, const char *w)
{
    if (!(mbi[0] & (1u << 2)))
        return 0;
    for (const char *p = (const char *)mbi[4]; *p; p++) {
        if (*p != ' ')
            continue;
        const char *a = p + 1, *b = w;
        while (*b && *a == *b) {
            a++;
            b++;
        }
        if (!*b && (*a == ' ' || !*a))
            return 1;
    }
    return 0;
}

void mb_main(u32 magic, const u32 *mbi)
{
    int use_iret = has_word(mbi, "iret");
    check("multiboot magic", magic, 0x2badb002, 8);
    load_descriptor_tables();
    scratch();
    flush_page();
    iomem();
    irq_lines(use_iret);
    puts("testdev: ");
    put_dec(failures);
    puts(" failures\n");
    outb(DEBUG_EXIT, failures ? 0x11 : 0x10);
}
