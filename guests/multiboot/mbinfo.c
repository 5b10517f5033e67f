/*
 * mbinfo: a Multiboot v1 test kernel (32-bit, paging off). It checks the machine
 * state it was entered in, prints what the Multiboot information structure holds
 * on COM1, writes to the debug console (port 0x402), and ends through QEMU's
 * isa-debug-exit device with value 0x21: exit status 0x43. The device's port is
 * 0x501 (QEMU's default) or `exitport=N` (decimal) from the command line. Without
 * the device it halts with interrupts off.
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define COM1 0x3f8
#define DEBUGCON 0x402
#define DEBUG_EXIT_DEFAULT 0x501
#define EXIT_VALUE 0x21

#define MB_LOADER_MAGIC 0x2BADB002
#define INFO_MEMORY (1u << 0)
#define INFO_CMDLINE (1u << 2)
#define INFO_MODS (1u << 3)
#define INFO_MMAP (1u << 6)
#define INFO_LOADER_NAME (1u << 9)

/* Multiboot 0.6.96, 3.3: the fields this kernel reads. */
struct mb_info {
    u32 flags;
    u32 mem_lower, mem_upper;
    u32 boot_device;
    u32 cmdline;
    u32 mods_count, mods_addr;
    u32 syms[4];
    u32 mmap_length, mmap_addr;
    u32 drives_length, drives_addr;
    u32 config_table;
    u32 boot_loader_name;
};

struct mb_module {
    u32 mod_start, mod_end, string, reserved;
};

/* Each entry is preceded by its size (not counting the size field itself). */
struct mb_mmap {
    u32 size;
    u32 base_lo, base_hi;
    u32 len_lo, len_hi;
    u32 type;
} __attribute__((packed));

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

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
    for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4)
        putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

static void put_hex64(u32 hi, u32 lo)
{
    puts("0x");
    put_hex(hi, 8);
    put_hex(lo, 8);
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

/* A string from the loader, quoted; bytes outside printable ASCII as '.'. */
static void put_quoted(const u8 *s, u32 max)
{
    putc('"');
    for (u32 i = 0; i < max && s[i]; i++)
        putc(s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '.');
    putc('"');
}

static void debugcon_puts(const char *s)
{
    while (*s)
        outb(DEBUGCON, (u8)*s++);
}

static void machine_state(u32 magic)
{
    u32 cr0, eflags;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("pushfl; popl %0" : "=r"(eflags));
    puts("mbinfo: magic=0x");
    put_hex(magic, 8);
    puts(magic == MB_LOADER_MAGIC ? " (ok)" : " (WRONG)");
    puts(" protected=");
    put_dec(cr0 & 1);
    puts(" paging=");
    put_dec(cr0 >> 31);
    puts(" interrupts=");
    put_dec((eflags >> 9) & 1);
    puts("\n");
}

static void memory(const struct mb_info *mbi)
{
    if (!(mbi->flags & INFO_MEMORY)) {
        puts("mbinfo: no memory sizes\n");
        return;
    }
    puts("mbinfo: mem_lower=");
    put_dec(mbi->mem_lower);
    puts(" KiB mem_upper=");
    put_dec(mbi->mem_upper);
    puts(" KiB\n");
    /* The last word of upper memory is RAM through the flat data segment. */
    volatile u32 *top = (volatile u32 *)(0x100000 + mbi->mem_upper * 1024 - 4);
    *top = 0x5a5aa5a5;
    puts(*top == 0x5a5aa5a5 ? "mbinfo: top of upper memory is RAM\n" : "mbinfo: top of upper memory is NOT RAM\n");
}

static void mmap(const struct mb_info *mbi)
{
    if (!(mbi->flags & INFO_MMAP)) {
        puts("mbinfo: no memory map\n");
        return;
    }
    u32 p = mbi->mmap_addr, end = mbi->mmap_addr + mbi->mmap_length;
    while (p < end) {
        const struct mb_mmap *e = (const struct mb_mmap *)p;
        puts("mbinfo: mmap base=");
        put_hex64(e->base_hi, e->base_lo);
        puts(" length=");
        put_hex64(e->len_hi, e->len_lo);
        puts(" type=");
        put_dec(e->type);
        puts("\n");
        p += e->size + 4;
    }
}

static void modules(const struct mb_info *mbi)
{
    if (!(mbi->flags & INFO_MODS)) {
        puts("mbinfo: no module list\n");
        return;
    }
    puts("mbinfo: mods=");
    put_dec(mbi->mods_count);
    puts("\n");
    const struct mb_module *m = (const struct mb_module *)mbi->mods_addr;
    for (u32 i = 0; i < mbi->mods_count; i++) {
        u32 size = m[i].mod_end - m[i].mod_start;
        puts("mbinfo: mod ");
        put_dec(i);
        puts(" size=");
        put_dec(size);
        puts(" page_aligned=");
        put_dec((m[i].mod_start & 0xfff) == 0);
        puts(" string=");
        put_quoted((const u8 *)m[i].string, 256);
        puts(" data=\"");
        const u8 *d = (const u8 *)m[i].mod_start;
        for (u32 j = 0; j < size && j < 48; j++)
            putc(d[j] >= 0x20 && d[j] < 0x7f ? (char)d[j] : '.');
        puts("\"\n");
    }
}

/* The decimal number after " key" in the command line, or `def`. */
static u32 cmdline_u32(const char *cmdline, const char *key, u32 def)
{
    for (const char *p = cmdline; *p; p++) {
        if (*p != ' ')
            continue;
        const char *k = key, *q = p + 1;
        while (*k && *q == *k) {
            k++;
            q++;
        }
        if (*k || *q < '0' || *q > '9')
            continue;
        u32 v = 0;
        while (*q >= '0' && *q <= '9')
            v = v * 10 + (u32)(*q++ - '0');
        return v;
    }
    return def;
}

void mb_main(u32 magic, const struct mb_info *mbi)
{
    u16 exit_port = DEBUG_EXIT_DEFAULT;
    machine_state(magic);
    memory(mbi);
    if (mbi->flags & INFO_CMDLINE) {
        puts("mbinfo: cmdline=");
        put_quoted((const u8 *)mbi->cmdline, 4096);
        puts("\n");
        exit_port = (u16)cmdline_u32((const char *)mbi->cmdline, "exitport=", DEBUG_EXIT_DEFAULT);
    }
    modules(mbi);
    mmap(mbi);
    if (mbi->flags & INFO_LOADER_NAME) {
        puts("mbinfo: loader=");
        put_quoted((const u8 *)mbi->boot_loader_name, 64);
        puts("\n");
    }
    debugcon_puts("mbinfo: hello from the debug console\nmbinfo: no newline at the end");
    puts("mbinfo: debugcon readback=0x");
    put_hex(inb(DEBUGCON), 2);
    puts("\nmbinfo: exit value 0x");
    put_hex(EXIT_VALUE, 2);
    puts("\n");
    outb(exit_port, EXIT_VALUE);
}
