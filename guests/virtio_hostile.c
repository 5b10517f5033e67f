/* virtio_hostile: a driver that misbehaves on purpose. It finds the virtio-blk
 * PCI device, reads sector 0 properly, then breaks the device in every way a
 * guest can (bad descriptor chains, bad ring indices, a misprogrammed transport)
 * and after each case checks that the device reported the error (status byte,
 * DEVICE_NEEDS_RESET) instead of taking the VMM down, resets it and proves it
 * works again by reading sector 0 once more. Output is deterministic: requests
 * are processed synchronously when the doorbell is written. */
#include "common/guest.h"
#include "common/virtio.h"

#define QSIZE 8
#define BLK_T_IN 0
#define VIRTIO_F_VERSION_1 (1UL << 32)
/* Far outside guest memory (and below the 48-bit canonical limit). */
#define UNMAPPED 0x700000000000UL
/* Polls of the used ring before deciding the device did not complete a request. */
#define SPINS 1000

static u8 ring_mem[4096] __attribute__((aligned(4096)));
static u8 req_mem[4096] __attribute__((aligned(4096)));
static u8 rng_ring[4096] __attribute__((aligned(4096)));

#define HDR (req_mem + 0x000)    /* 16-byte request header */
#define DATA (req_mem + 0x200)   /* 512-byte sector buffer */
#define STATUS (req_mem + 0x400) /* status byte */
#define EXTRA (req_mem + 0x600)  /* a spare device-readable buffer */
#define RNG_BUF (req_mem + 0x800)

static struct virtio_dev blk;
static struct virtq q;
static u8 sector0[16];
static u32 failures;

static void say(const char *s)
{
    puts("virtio_hostile: ");
    puts(s);
}

static void put_hex8(u8 v)
{
    putc("0123456789abcdef"[v >> 4]);
    putc("0123456789abcdef"[v & 15]);
}

static void put_bytes(const u8 *p, u32 n)
{
    for (u32 i = 0; i < n; i++)
        put_hex8(p[i]);
}

static int same(const u8 *a, const u8 *b, u32 n)
{
    for (u32 i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

static void set_desc(u16 i, u64 addr, u32 len, u16 flags, u16 next)
{
    q.desc[i].addr = addr;
    q.desc[i].len = len;
    q.desc[i].flags = flags;
    q.desc[i].next = next;
}

/* Negotiates VERSION_1 only; returns the status read back. */
static u8 negotiate(void)
{
    return virtio_negotiate(&blk, VIRTIO_F_VERSION_1);
}

/* Full, correct bring-up with queue 0 of QSIZE entries. Returns the status. */
static u8 bring_up(void)
{
    negotiate();
    virtq_layout(&blk, &q, 0, QSIZE, ring_mem);
    virtq_setup(&blk, &q);
    virtio_set_status(&blk, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    return virtio_status(&blk);
}

/* A correct read of `sector` in descriptors 0 (header), 1 (data), 2 (status). */
static void prepare_read(u64 sector)
{
    memset(req_mem, 0, 0x800);
    *(u32 *)HDR = BLK_T_IN;
    *(u64 *)(HDR + 8) = sector;
    *STATUS = 0xee;
    set_desc(0, (u64)HDR, 16, VRING_DESC_F_NEXT, 1);
    set_desc(1, (u64)DATA, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
    set_desc(2, (u64)STATUS, 1, VRING_DESC_F_WRITE, 0);
}

/* Submits descriptor 0 as a chain head; returns how many requests completed. */
static u16 submit(void)
{
    u16 before = q.used->idx;
    virtq_submit(&q, 0);
    return (u16)(virtq_wait_used(&q, (u16)(before + 1), SPINS) - before);
}

/* Reads sector 0 through a freshly reset device; 0 on success, else a code. */
static u32 read_sector0(u8 *out)
{
    u8 s = bring_up();
    if (s != 0x0f) {
        say("bring-up status 0x");
        put_hex8(s);
        putc('\n');
        return 1;
    }
    prepare_read(0);
    if (submit() != 1)
        return 2;
    if (*STATUS != 0)
        return 3;
    if (q.used->ring[0].id != 0 || q.used->ring[0].len != 513)
        return 4;
    memcpy(out, DATA, 16);
    return 0;
}

/* Prints what the device made of a hostile case: requests completed, the
 * request's status byte (0xee: untouched), the device status and the ISR. */
static void report(const char *name, u16 used)
{
    u8 ds = virtio_status(&blk);
    u8 isr = virtio_isr(&blk);
    say(name);
    puts(": used=");
    put_dec(used);
    puts(" status=0x");
    put_hex8(*STATUS);
    puts(" device_status=0x");
    put_hex8(ds);
    puts(" isr=0x");
    put_hex8(isr);
    puts(ds & VIRTIO_NEEDS_RESET ? " needs_reset\n" : " running\n");
}

/* Resets the device and reads sector 0 again. */
static void recover(const char *name)
{
    u8 got[16];
    u32 err = read_sector0(got);
    say(name);
    if (!err && same(got, sector0, 16)) {
        puts(": recovered\n");
        return;
    }
    failures++;
    puts(": NOT recovered, error ");
    put_dec(err);
    puts(" status=0x");
    put_hex8(*STATUS);
    puts(" device_status=0x");
    put_hex8(virtio_status(&blk));
    putc('\n');
}

/* (a) desc 0 -> 1 -> 0 -> ...: a chain that never ends. */
static u16 case_loop(void)
{
    bring_up();
    prepare_read(0);
    set_desc(0, (u64)HDR, 16, VRING_DESC_F_NEXT, 1);
    set_desc(1, (u64)EXTRA, 16, VRING_DESC_F_NEXT, 0);
    return submit();
}

/* (b) the data buffer lies far outside guest memory. */
static u16 case_outside(void)
{
    bring_up();
    prepare_read(0);
    q.desc[1].addr = UNMAPPED;
    return submit();
}

/* (c) a read request whose data buffer is device-readable. */
static u16 case_direction(void)
{
    bring_up();
    prepare_read(0);
    q.desc[1].flags = VRING_DESC_F_NEXT;
    return submit();
}

/* (d) an 8-byte request header. */
static u16 case_short_header(void)
{
    bring_up();
    prepare_read(0);
    q.desc[0].len = 8;
    return submit();
}

/* (e) avail.idx jumps to 1000 with a queue of 8. */
static u16 case_avail_jump(void)
{
    bring_up();
    prepare_read(0);
    q.avail->ring[0] = 0;
    barrier();
    q.avail->idx = 1000;
    barrier();
    *q.doorbell = 0;
    return (u16)(virtq_wait_used(&q, 1, SPINS) - 0);
}

/* (f) queue size 7 (not a power of two), then the queue is enabled and used. */
static u16 case_queue_size(void)
{
    negotiate();
    virtq_layout(&blk, &q, 0, QSIZE, ring_mem);
    virtio_program_queue(&blk, 0, 7, (u64)q.desc, (u64)q.avail, (u64)q.used);
    virtio_enable_queue(&blk, 0);
    virtio_set_status(&blk, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    prepare_read(0);
    return submit();
}

/* (g) DRIVER_OK with queue 0 never enabled, then its doorbell. */
static u16 case_notify_disabled(void)
{
    negotiate();
    virtq_layout(&blk, &q, 0, QSIZE, ring_mem);
    virtio_set_status(&blk, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    prepare_read(0);
    return submit();
}

/* (h) ring addresses outside guest memory, enabled, DRIVER_OK, doorbell. */
static u16 case_rings_outside(void)
{
    negotiate();
    virtq_layout(&blk, &q, 0, QSIZE, ring_mem);
    virtio_program_queue(&blk, 0, QSIZE, UNMAPPED, UNMAPPED + 0x1000, UNMAPPED + 0x2000);
    virtio_enable_queue(&blk, 0);
    virtio_set_status(&blk, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    prepare_read(0);
    virtio_notify(&blk, 0);
    return 0;
}

/* (i) DRIVER_OK without FEATURES_OK, then a correct request. */
static u16 case_no_features_ok(void)
{
    virtio_reset(&blk);
    virtio_set_status(&blk, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER);
    virtq_layout(&blk, &q, 0, QSIZE, ring_mem);
    virtq_setup(&blk, &q);
    virtio_set_status(&blk, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_DRIVER_OK);
    prepare_read(0);
    return submit();
}

/* (j) the doorbell of queue 7, which the device does not have. */
static u16 case_missing_queue(void)
{
    bring_up();
    prepare_read(0);
    *(volatile u16 *)(blk.notify + 7 * blk.notify_mul) = 7;
    return (u16)(virtq_wait_used(&q, 1, SPINS) - 0);
}

/* (k) a descriptor table at an address that is not 16-byte aligned. */
static u16 case_misaligned(void)
{
    negotiate();
    virtq_layout(&blk, &q, 0, QSIZE, ring_mem);
    virtio_program_queue(&blk, 0, QSIZE, (u64)q.desc + 8, (u64)q.avail, (u64)q.used);
    virtio_enable_queue(&blk, 0);
    virtio_set_status(&blk, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    prepare_read(0);
    return submit();
}

/* (l) a read past the end of the disk: an I/O error in the status byte, and
 * the device keeps working. */
static u16 case_past_end(void)
{
    bring_up();
    prepare_read(0xffffffffUL);
    return submit();
}

static const struct {
    const char *name;
    u16 (*run)(void);
} cases[] = {
    {"(a) descriptor loop", case_loop},
    {"(b) buffer outside memory", case_outside},
    {"(c) wrong direction", case_direction},
    {"(d) short header", case_short_header},
    {"(e) avail.idx=1000", case_avail_jump},
    {"(f) queue size 7", case_queue_size},
    {"(g) notify of disabled queue", case_notify_disabled},
    {"(h) rings outside memory", case_rings_outside},
    {"(i) DRIVER_OK without FEATURES_OK", case_no_features_ok},
    {"(j) notify of queue 7", case_missing_queue},
    {"(k) misaligned descriptor table", case_misaligned},
    {"(l) sector past the end", case_past_end},
};

/* Another device must be unaffected: 16 bytes from virtio-rng. */
static void check_rng(void)
{
    struct virtio_dev rng;
    struct virtq rq;
    int err = virtio_probe(&rng, VIRTIO_ID_RNG);
    if (err) {
        failures++;
        say("virtio-rng not found\n");
        return;
    }
    virtio_negotiate(&rng, VIRTIO_F_VERSION_1);
    virtq_layout(&rng, &rq, 0, QSIZE, rng_ring);
    virtq_setup(&rng, &rq);
    virtio_set_status(&rng, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    rq.desc[0].addr = (u64)RNG_BUF;
    rq.desc[0].len = 16;
    rq.desc[0].flags = VRING_DESC_F_WRITE;
    virtq_submit(&rq, 0);
    u16 used = virtq_wait_used(&rq, 1, SPINS);
    say("virtio-rng: used=");
    put_dec(used);
    puts(" len=");
    put_dec(used ? rq.used->ring[0].len : 0);
    putc('\n');
    virtio_reset(&rng);
}

void guest_main(const char *cmdline)
{
    (void)cmdline;
    int err = virtio_probe(&blk, VIRTIO_ID_BLOCK);
    if (err) {
        say("no usable virtio-blk device, error ");
        put_dec((u64)-err);
        putc('\n');
        reset();
    }
    say("virtio-blk at 00:");
    put_hex8((u8)blk.pci_dev);
    puts(".0, ");
    put_dec(mmio_read16(blk.common, VC_NUM_QUEUES));
    puts(" queue(s), notify multiplier ");
    put_dec(blk.notify_mul);
    putc('\n');

    u32 e = read_sector0(sector0);
    if (e) {
        say("happy path failed, error ");
        put_dec(e);
        puts(" status=0x");
        put_hex8(*STATUS);
        puts(" device_status=0x");
        put_hex8(virtio_status(&blk));
        putc('\n');
        reset();
    }
    say("sector 0: ");
    put_bytes(sector0, 16);
    putc('\n');

    for (u32 i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        u16 used = cases[i].run();
        report(cases[i].name, used);
        recover(cases[i].name);
    }

    check_rng();

    u8 again[16];
    e = read_sector0(again);
    if (e || !same(again, sector0, 16)) {
        say("final read failed, error ");
        put_dec(e);
        putc('\n');
    } else if (failures) {
        say("failures: ");
        put_dec(failures);
        putc('\n');
    } else {
        say("survived\n");
    }
    virtio_reset(&blk);
    reset();
}
