/* jitcheck: what a translator must get exactly right, each in a hot loop (so that an
 * emulator translates it before the event):
 *   - #DE from a DIV in the middle of a loop: the handler sees the DIV's RIP and the
 *     loop counter of that very iteration;
 *   - #GP from a load through a non-canonical pointer, likewise;
 *   - #PF in the middle of a block (demand paging): 16 pages of a region mapped
 *     not-present are faulted in by the handler and the loads retried; the sum of
 *     what was read must be exact;
 *   - self-modifying code: a function rewritten by the CPU that calls it, seen at
 *     the next call (also one that spans two pages, rewritten on the second);
 *   - a LAPIC timer interrupt while the CPU spins in a tight loop: taken within a
 *     bounded time;
 *   - PUSHF/CLI/POPF and `mov reg, ss` (kernel mode): exact flags;
 *   - `lock`ed counters on every CPU (`cpus=N`, 1..9): exact totals.
 * Prints one line per check and ends with `jitcheck: done`. */
#include "common/guest.h"
#include "common/smp.h"

#define LOOPS 2000
#define LOCK_ADDS 200000
#define TIMEOUT_CYCLES 4000000000UL
#define TIMER_VECTOR 0x40
#define LAPIC_EOI 0x0b0
#define LAPIC_SVR 0x0f0
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_DIV 0x3e0
/* PML4 slot 1: 512 GiB, where the demand-paged region lives. */
#define DEMAND_BASE 0x8000000000UL
#define DEMAND_PAGES 16

struct frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 vector, error, rip, cs, rflags, rsp, ss;
};

/* Interrupt stubs: push a zero error code where the CPU pushes none, the vector,
 * the GPRs, then call trap(frame). */
__asm__(
    ".text\n"
    ".macro stub name, vec, err\n"
    "\\name:\n"
    ".if \\err == 0\n"
    "    pushq $0\n"
    ".endif\n"
    "    pushq $\\vec\n"
    "    jmp trap_common\n"
    ".endm\n"
    "stub trap_de, 0, 0\n"
    "stub trap_gp, 13, 1\n"
    "stub trap_pf, 14, 1\n"
    "stub trap_timer, 0x40, 0\n"
    "trap_common:\n"
    "    pushq %rax; pushq %rbx; pushq %rcx; pushq %rdx; pushq %rsi; pushq %rdi; pushq %rbp\n"
    "    pushq %r8; pushq %r9; pushq %r10; pushq %r11; pushq %r12; pushq %r13; pushq %r14; pushq %r15\n"
    "    movq %rsp, %rdi\n"
    "    cld\n"
    "    call trap\n"
    "    popq %r15; popq %r14; popq %r13; popq %r12; popq %r11; popq %r10; popq %r9; popq %r8\n"
    "    popq %rbp; popq %rdi; popq %rsi; popq %rdx; popq %rcx; popq %rbx; popq %rax\n"
    "    addq $16, %rsp\n"
    "    iretq\n");
extern char trap_de[], trap_gp[], trap_pf[], trap_timer[];

static u64 idt[256 * 2] __attribute__((aligned(16)));
static volatile u64 fault_rip, fault_counter, fault_count, ticks;
static volatile u64 resume_rip;
static u64 demand_pt[512] __attribute__((aligned(4096)));
static u64 demand_pd[512] __attribute__((aligned(4096)));
static u64 demand_pdpt[512] __attribute__((aligned(4096)));
static u8 demand_data[DEMAND_PAGES][4096] __attribute__((aligned(4096)));
static u8 smc_page[4096] __attribute__((aligned(4096)));
static u8 smc_pair[8192] __attribute__((aligned(4096)));
static volatile u32 lock_counter, lock_done;

static void set_gate(int v, void *handler)
{
    u64 h = (u64)handler;
    idt[2 * v] = (h & 0xffff) | (0x10UL << 16) | (0x8eUL << 40) | ((h >> 16) & 0xffff) << 48;
    idt[2 * v + 1] = h >> 32;
}

void trap(struct frame *f)
{
    switch (f->vector) {
    case 0:
    case 13:
        fault_rip = f->rip;
        fault_counter = f->rcx;
        fault_count++;
        f->rip = resume_rip;
        break;
    case 14: {
        u64 cr2;
        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
        u64 page = (cr2 - DEMAND_BASE) >> 12;
        if (cr2 < DEMAND_BASE || page >= DEMAND_PAGES) {
            puts("jitcheck: unexpected #PF\n");
            reset();
        }
        demand_pt[page] = (u64)demand_data[page] | 3;
        __asm__ volatile("invlpg (%0)" : : "r"(cr2) : "memory");
        fault_count++;
        break; /* retry the load */
    }
    case TIMER_VECTOR:
        ticks++;
        lapic_write(LAPIC_EOI, 0);
        break;
    default:
        puts("jitcheck: unexpected vector\n");
        reset();
    }
}

/* A hot loop of divisions; the last divisor is zero. RCX is the counter. */
static void check_de(void)
{
    extern char de_div[], de_resume[];
    resume_rip = (u64)de_resume;
    fault_count = 0;
    u64 acc = 0;
    __asm__ volatile(
        "xor %%ecx, %%ecx\n"
        "1: mov %%rcx, %%rbx\n"
        "   sub %[n], %%rbx\n"
        "   inc %%rbx\n"          /* divisor n-1-i+1 = n-i: zero when i == n */
        "   mov %%rcx, %%rax\n"
        "   xor %%edx, %%edx\n"
        ".globl de_div\n"
        "de_div: div %%rbx\n"
        "   add %%rax, %[acc]\n"
        "   inc %%rcx\n"
        "   jmp 1b\n"
        ".globl de_resume\n"
        "de_resume:\n"
        : [acc] "+r"(acc)
        : [n] "r"((u64)LOOPS)
        : "rax", "rbx", "rcx", "rdx", "cc");
    (void)acc;
    puts("jitcheck: #DE ");
    puts(fault_count == 1 && fault_rip == (u64)de_div ? "at the DIV" : "WRONG RIP");
    puts(", iteration ");
    put_dec(fault_counter);
    puts("\n");
}

/* A hot loop of loads; the pointer turns non-canonical at iteration LOOPS. */
static void check_gp(void)
{
    extern char gp_load[], gp_resume[];
    static u64 cell = 7;
    resume_rip = (u64)gp_resume;
    fault_count = 0;
    u64 sum = 0;
    __asm__ volatile(
        "xor %%ecx, %%ecx\n"
        "1: mov %%rcx, %%rbx\n"
        "   cmp %[n], %%rcx\n"
        "   mov %[bad], %%rdx\n"
        "   mov %[ok], %%rax\n"
        "   cmove %%rdx, %%rax\n"
        ".globl gp_load\n"
        "gp_load: add (%%rax), %[sum]\n"
        "   inc %%rcx\n"
        "   jmp 1b\n"
        ".globl gp_resume\n"
        "gp_resume:\n"
        : [sum] "+r"(sum)
        : [n] "r"((u64)LOOPS), [ok] "r"(&cell), [bad] "r"(0x8000000000000000UL)
        : "rax", "rbx", "rcx", "rdx", "cc", "memory");
    puts("jitcheck: #GP ");
    puts(fault_count == 1 && fault_rip == (u64)gp_load ? "at the load" : "WRONG RIP");
    puts(", iteration ");
    put_dec(fault_counter);
    puts(", sum ");
    put_dec(sum);
    puts("\n");
}

static void check_pf(void)
{
    u64 *pml4;
    __asm__ volatile("mov %%cr3, %0" : "=r"(pml4));
    for (int p = 0; p < DEMAND_PAGES; p++)
        for (int k = 0; k < 512; k++)
            ((u64 *)demand_data[p])[k] = (u64)p * 1000 + k;
    demand_pd[0] = (u64)demand_pt | 3;
    demand_pdpt[0] = (u64)demand_pd | 3;
    pml4[1] = (u64)demand_pdpt | 3;
    __asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" : : : "rax", "memory");
    fault_count = 0;
    u64 sum = 0;
    /* Several loads per block, crossing into a not-present page in the middle. */
    for (u64 k = 0; k < DEMAND_PAGES * 512; k += 64) {
        volatile u64 *q = (volatile u64 *)(DEMAND_BASE + k * 8);
        sum += q[0] + q[1] * 3 + q[2] * 5;
    }
    u64 want = 0;
    for (u64 k = 0; k < DEMAND_PAGES * 512; k += 64) {
        u64 p = k / 512, o = k % 512;
        want += (p * 1000 + o) + (p * 1000 + o + 1) * 3 + (p * 1000 + o + 2) * 5;
    }
    puts("jitcheck: #PF ");
    put_dec(fault_count);
    puts(" pages faulted in, sum ");
    puts(sum == want ? "exact\n" : "WRONG\n");
}

static void check_smc(void)
{
    u8 *fn = smc_page;
    u32 (*call)(void) = (u32 (*)(void))fn;
    u32 bad = 0;
    for (u32 r = 0; r < LOOPS; r++) {
        fn[0] = 0xb8; /* mov eax, imm32; ret */
        *(volatile u32 *)(fn + 1) = r;
        fn[5] = 0xc3;
        if (call() != r)
            bad++;
    }
    /* The same across a page boundary: `jmp` to a `mov eax, imm32; ret` that
     * starts 3 bytes before the second page; only bytes on the second page (the
     * immediate's upper half) are rewritten, so a translator that links the jump
     * straight to the two-page block must check the second page itself. */
    u8 *f2 = smc_pair + 4096 - 16;
    u32 (*call2)(void) = (u32 (*)(void))f2;
    f2[0] = 0xeb; /* jmp +11: to f2 + 13 */
    f2[1] = 11;
    f2[13] = 0xb8;
    f2[14] = 0;
    f2[15] = 0;
    f2[18] = 0xc3;
    for (u32 r = 0; r < LOOPS; r++) {
        /* Rewritten every 32 calls: hot enough to be translated in between. */
        u32 v = r / 32;
        if (r % 32 == 0)
            *(volatile u16 *)(f2 + 16) = (u16)v;
        if (call2() != v << 16)
            bad++;
    }
    puts("jitcheck: self-modifying code: ");
    put_dec(bad);
    puts(" stale calls\n");
}

static void check_timer(void)
{
    outb(0x21, 0xff); /* mask both PICs: only the LAPIC timer may interrupt */
    outb(0xa1, 0xff);
    lapic_write(LAPIC_SVR, 0x1ff);
    lapic_write(LAPIC_TIMER_DIV, 0xb); /* divide by 1 */
    lapic_write(LAPIC_LVT_TIMER, TIMER_VECTOR);
    ticks = 0;
    lapic_write(LAPIC_TIMER_INIT, 200000);
    __asm__ volatile("sti");
    u64 start = rdtsc(), spins = 0;
    /* The tight loop: no I/O, no exit of its own. */
    while (!ticks && rdtsc() - start < TIMEOUT_CYCLES)
        spins++;
    __asm__ volatile("cli");
    puts(ticks ? "jitcheck: timer interrupt taken in a tight loop\n"
               : "jitcheck: timer interrupt NOT taken\n");
}

/* PUSHFQ/CLI/POPFQ as Linux's local_irq_save/restore use them, nested, and
 * `mov reg, ss`, in a hot loop: IF as the guest set it every time. (Whether an
 * interrupt pending while IF is clear is taken at the POPFQ that sets IF is not
 * checked: /dev/kvm's PVM backend runs the guest kernel in ring 3, where POPF
 * cannot change IF, and never takes it there.) */
static void check_flags(void)
{
    u64 bad = 0, ss0 = 0;
    __asm__ volatile("mov %%ss, %0" : "=r"(ss0));
    for (u32 r = 0; r < LOOPS; r++) {
        u64 outer, inner, after, ss, done;
        __asm__ volatile("sti\n\t"
                         "pushfq; pop %0\n\t"
                         "cli\n\t"
                         "pushfq; pop %1\n\t"
                         "push %1; popfq\n\t"
                         "pushfq; pop %2\n\t"
                         "mov %%ss, %3\n\t"
                         "push %0; popfq\n\t"
                         "pushfq; pop %4\n\t"
                         "cli"
                         : "=&r"(outer), "=&r"(inner), "=&r"(after), "=&r"(ss), "=&r"(done)
                         :
                         : "memory", "cc");
        if (!(outer & 0x200) || (inner & 0x200) || (after & 0x200) || !(done & 0x200) ||
            !(outer & 2) || ss != ss0)
            bad++;
    }
    puts("jitcheck: pushf/cli/popf: ");
    put_dec(bad);
    puts(" wrong\n");
}

void ap_main(void)
{
    for (u32 k = 0; k < LOCK_ADDS; k++)
        atomic_fetch_add(&lock_counter, 1);
    atomic_fetch_add(&lock_done, 1);
}

static void check_locks(u64 cpus)
{
    install_trampoline();
    for (u32 ap = 1; ap < cpus; ap++)
        start_ap(ap);
    for (u32 k = 0; k < LOCK_ADDS; k++)
        atomic_fetch_add(&lock_counter, 1);
    u64 start = rdtsc();
    while (lock_done < cpus - 1 && rdtsc() - start < 10 * TIMEOUT_CYCLES)
        cpu_relax();
    puts("jitcheck: locked counter ");
    put_dec(lock_counter);
    puts(lock_counter == cpus * LOCK_ADDS ? " (exact)\n" : " (WRONG)\n");
}

void guest_main(const char *cmdline)
{
    u64 cpus = cmdline_u64(cmdline, "cpus=", 1);
    if (cpus < 1 || cpus > 9)
        cpus = 1;
    set_gate(0, trap_de);
    set_gate(13, trap_gp);
    set_gate(14, trap_pf);
    set_gate(TIMER_VECTOR, trap_timer);
    struct {
        u16 limit;
        u64 base;
    } __attribute__((packed)) idtr = {sizeof(idt) - 1, (u64)idt};
    __asm__ volatile("lidt %0" : : "m"(idtr));
    check_de();
    check_gp();
    check_pf();
    check_smc();
    check_timer();
    check_flags();
    check_locks(cpus);
    puts("jitcheck: done\n");
    reset();
}
