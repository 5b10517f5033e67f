/* xmodify: cross-modifying code. The boot CPU calls a tiny function in a loop while
 * an application processor rewrites it: in round r = 1..ROUNDS the AP stores r into
 * the function's `mov eax, imm32` (one aligned 4-byte store), posts r, and waits
 * until the caller has seen the function return r. The caller follows the SDM's
 * cross-modifying-code protocol (Intel SDM vol. 3A, 9.1.3): once it sees a new r
 * posted it executes a serializing instruction (CPUID), after which it must get r
 * within STALE_LIMIT calls; and the values it gets must never go backwards. (Without
 * the serialization x86 does not promise when the new code is seen, and QEMU's
 * multi-threaded TCG indeed keeps running the old code.) Needs 2 CPUs. */
#include "common/guest.h"
#include "common/smp.h"

#define ROUNDS 300
#define STALE_LIMIT 1000UL
/* About two seconds at 2 GHz or more. */
#define TIMEOUT_CYCLES 4000000000UL

/* The patched function, alone in its page: at offset 3 `mov eax, imm32` (B8, the
 * immediate 4-aligned at offset 4), then `ret` (C3). */
static u8 code_page[4096] __attribute__((aligned(4096)));
#define FN_OFFSET 3
#define IMM ((volatile u32 *)(code_page + FN_OFFSET + 1))

static volatile u32 ap_ready;
static volatile u32 posted; /* last value the AP wrote into the function */
static volatile u32 seen;   /* last value the caller got from it */
static volatile u32 failed;

void ap_main(void)
{
    ap_ready = 1;
    for (u32 r = 1; r <= ROUNDS && !failed; r++) {
        *IMM = r;
        posted = r;
        u64 start = rdtsc();
        while (seen != r && !failed) {
            if (rdtsc() - start > TIMEOUT_CYCLES) {
                failed = 1;
                puts("xmodify: writer timed out in round ");
                put_dec(r);
                puts("\n");
                return;
            }
            cpu_relax();
        }
    }
}

void guest_main(const char *cmdline)
{
    (void)cmdline;
    u8 *fn = code_page + FN_OFFSET;
    fn[0] = 0xb8;
    *IMM = 0;
    fn[5] = 0xc3;
    u32 (*call)(void) = (u32 (*)(void))fn;
    puts("xmodify: starting the writer CPU\n");
    install_trampoline();
    start_ap(1);
    u64 start = rdtsc();
    while (!ap_ready) {
        if (rdtsc() - start > TIMEOUT_CYCLES) {
            puts("xmodify: AP 1 did not start\n");
            reset();
        }
        cpu_relax();
    }
    u32 last = 0, serialized = 0;
    u64 stale = 0;
    while (last < ROUNDS && !failed) {
        u32 v = call();
        u32 want = posted; /* read after the call: the AP stores the code first */
        /* The code is stored before `posted`, so v may be one round ahead of it. */
        if (v < last || v > want + 1) {
            failed = 1;
            puts("xmodify: got ");
            put_dec(v);
            puts(" after ");
            put_dec(last);
            puts(" (posted ");
            put_dec(want);
            puts(")\n");
            break;
        }
        if (v != last) {
            last = v;
            seen = v;
            stale = 0;
        } else if (want > serialized) {
            serialize();
            serialized = want;
            stale = 0;
        } else if (want > v && ++stale > STALE_LIMIT) {
            failed = 1;
            puts("xmodify: still running the code of round ");
            put_dec(v);
            puts(" after round ");
            put_dec(want);
            puts(" was written and CPUID executed\n");
            break;
        }
    }
    if (!failed) {
        puts("xmodify: ");
        put_dec(ROUNDS);
        puts(" rewrites seen in order\n");
    }
    reset();
}
