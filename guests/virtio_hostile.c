/* virtio_hostile: a driver that misbehaves on purpose. It finds the virtio-blk
 * device (PCI, or virtio-mmio with `mmio=1` on the command line), reads sector 0
 * properly, then breaks the device in every way a guest can (bad descriptor
 * chains, bad indirect tables, bad ring indices, a misprogrammed transport) and
 * after each case prints what the device made of it (requests completed, status
 * byte, device status with DEVICE_NEEDS_RESET, interrupt status), resets it and
 * proves it works again by reading sector 0 once more. With `net=1` it does the
 * same to virtio-net (bad transmit chains, frames too long or too short, bad
 * receive buffers; the host end of the NIC must echo the frames of type 0x88b5
 * it receives, see net_cases) and with `balloon=1` to virtio-balloon (PFNs and
 * reported ranges outside RAM or unaligned, bad buffer lengths). Then it checks
 * that virtio-rng, the NIC, the balloon and virtio-blk still work, and resets
 * the machine.
 *
 * Command line: `ram_mib=N` (default 128) must match the VM's memory, `mmio=1`
 * selects the virtio-mmio transport, `net=1` and `balloon=1` ask for the NIC
 * and the balloon cases. Output is deterministic (the same on every
 * accelerator): requests are processed synchronously when the doorbell is
 * written, and received frames are waited for. crates/hako/tests/virtio_hostile.rs
 * holds what each case must do. */
#include "common/guest.h"
#include "common/virtio.h"

#define QSIZE 8
#define BLK_T_IN 0
/* Far outside guest memory (and below the 48-bit canonical limit). */
#define UNMAPPED 0x700000000000UL
/* TSC ticks (about a second) to wait for a request that neither completes nor
 * breaks the device (this VMM completes requests during the doorbell write; QEMU
 * does not). */
#define WAIT (1UL << 31)

static u8 ring_mem[4096] __attribute__((aligned(4096)));
static u8 req_mem[4096] __attribute__((aligned(4096)));
static u8 rng_ring[4096] __attribute__((aligned(4096)));

#define HDR (req_mem + 0x000)    /* 16-byte request header */
#define DATA (req_mem + 0x200)   /* 512-byte sector buffer */
#define STATUS (req_mem + 0x400) /* status byte */
#define EXTRA (req_mem + 0x600)  /* a spare device-readable buffer */
#define RNG_BUF (req_mem + 0x800)
#define INDIRECT (req_mem + 0xc00) /* an indirect descriptor table (64 entries) */

static struct virtio_dev blk;
static struct virtq q;
static u8 sector0[16];
static u32 failures;
static u64 ram_end;

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

/* Full, correct bring-up with queue 0 of QSIZE entries, accepting `features`.
 * Returns the status. */
static u8 bring_up_with(u64 features)
{
    virtio_negotiate(&blk, features);
    virtq_layout(&blk, &q, 0, QSIZE, ring_mem);
    virtq_setup(&blk, &q);
    virtio_set_status(&blk, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    return virtio_status(&blk);
}

static u8 bring_up(void)
{
    return bring_up_with(VIRTIO_F_VERSION_1);
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
    return (u16)(virtq_wait_used(&q, (u16)(before + 1), WAIT) - before);
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
    virtio_notify(&blk, 0);
    return virtq_wait_used(&q, 1, WAIT);
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
    /* PCI: queue N's notify offset would be N (the offsets of the existing queues
     * are their indices on this VMM), so this is the doorbell a queue 7 would have. */
    virtio_doorbell(&blk, 7, 7);
    return virtq_wait_used(&q, 1, WAIT);
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

/* An indirect read: descriptor 0 of the ring points at a table holding the
 * header, data and status descriptors of prepare_read. */
static void prepare_indirect_read(void)
{
    bring_up_with(VIRTIO_F_VERSION_1 | VIRTIO_F_INDIRECT_DESC);
    prepare_read(0);
    volatile struct vring_desc *t = (volatile struct vring_desc *)INDIRECT;
    for (u32 i = 0; i < 3; i++) {
        t[i].addr = q.desc[i].addr;
        t[i].len = q.desc[i].len;
        t[i].flags = q.desc[i].flags;
        t[i].next = q.desc[i].next;
    }
    set_desc(0, (u64)INDIRECT, 3 * 16, VRING_DESC_F_INDIRECT, 0);
    set_desc(1, 0, 0, 0, 0);
    set_desc(2, 0, 0, 0, 0);
}

/* (m) a correct indirect read (the control for n-q). */
static u16 case_indirect_ok(void)
{
    prepare_indirect_read();
    return submit();
}

/* (n) an indirect table whose entries loop: 0 -> 1 -> 0. */
static u16 case_indirect_loop(void)
{
    prepare_indirect_read();
    volatile struct vring_desc *t = (volatile struct vring_desc *)INDIRECT;
    t[1].flags = VRING_DESC_F_NEXT;
    t[1].next = 0;
    t[0].flags = VRING_DESC_F_NEXT;
    t[0].next = 1;
    return submit();
}

/* (o) an indirect descriptor inside an indirect table. */
static u16 case_indirect_nested(void)
{
    prepare_indirect_read();
    volatile struct vring_desc *t = (volatile struct vring_desc *)INDIRECT;
    t[1].addr = (u64)INDIRECT;
    t[1].len = 3 * 16;
    t[1].flags = VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT;
    return submit();
}

/* (p) an indirect table outside guest memory. */
static u16 case_indirect_outside(void)
{
    prepare_indirect_read();
    q.desc[0].addr = UNMAPPED;
    return submit();
}

/* (q) an indirect table whose length is not a multiple of 16. */
static u16 case_indirect_len(void)
{
    prepare_indirect_read();
    q.desc[0].len = 40;
    return submit();
}

/* (r) an available ring entry naming descriptor 200 of a queue of 8. */
static u16 case_head_range(void)
{
    bring_up();
    prepare_read(0);
    q.avail->ring[0] = 200;
    barrier();
    q.next_avail = 1;
    q.avail->idx = 1;
    barrier();
    virtio_notify(&blk, 0);
    return virtq_wait_used(&q, 1, WAIT);
}

/* (s) the data buffer is the device's own BAR (MMIO, not RAM). */
static u16 case_buffer_mmio(void)
{
    bring_up();
    prepare_read(0);
    q.desc[1].addr = (u64)blk.common;
    return submit();
}

/* (t) a data buffer that wraps around the end of the address space. */
static u16 case_buffer_wraps(void)
{
    bring_up();
    prepare_read(0);
    q.desc[1].addr = 0xffffffffffffff00UL;
    return submit();
}

/* (u) a data buffer straddling the end of RAM. */
static u16 case_buffer_ram_end(void)
{
    bring_up();
    prepare_read(0);
    q.desc[1].addr = ram_end - 256;
    return submit();
}

/* (v) a queue size above the maximum (512 > 256). */
static u16 case_queue_too_big(void)
{
    negotiate();
    virtq_layout(&blk, &q, 0, QSIZE, ring_mem);
    virtio_program_queue(&blk, 0, 512, (u64)q.desc, (u64)q.avail, (u64)q.used);
    virtio_enable_queue(&blk, 0);
    virtio_set_status(&blk, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    prepare_read(0);
    return submit();
}

/* (w) the data buffer is the descriptor table itself: the device overwrites the
 * chain it is executing (legal for the device, which copied it first). */
static u16 case_data_over_ring(void)
{
    bring_up();
    prepare_read(0);
    q.desc[1].addr = (u64)q.desc;
    return submit();
}

/* (x) MSI-X enabled with the configuration vector aimed at address 0, then a
 * short header: the device's interrupt goes nowhere, the device still breaks. */
static u16 case_msix_bogus(void)
{
    bring_up();
    u32 cap;
    for (cap = pci_first_cap(blk.pci_dev); cap; cap = pci_next_cap(blk.pci_dev, cap))
        if (pci_read8(blk.pci_dev, 0, cap) == 0x11)
            break;
    if (!cap)
        return 0xffff;
    u32 table = pci_read32(blk.pci_dev, 0, cap + 4);
    volatile u8 *t = (volatile u8 *)(pci_bar_addr(blk.pci_dev, table & 7) + (table & ~7u));
    mmio_write32(t, 0, 0);  /* address low */
    mmio_write32(t, 4, 0);  /* address high */
    mmio_write32(t, 8, 0);  /* data: vector 0, fixed */
    mmio_write32(t, 12, 0); /* unmasked */
    u32 ctrl = pci_read32(blk.pci_dev, 0, cap);
    pci_write32(blk.pci_dev, 0, cap, ctrl | (1u << 31)); /* MSI-X enable */
    mmio_write16(blk.common, VC_MSIX_CONFIG, 0);
    prepare_read(0);
    q.desc[0].len = 8;
    u16 used = submit();
    pci_write32(blk.pci_dev, 0, cap, ctrl & ~(1u << 31));
    return used;
}

static const struct {
    const char *name;
    u16 (*run)(void);
    int pci_only;
} cases[] = {
    {"(a) descriptor loop", case_loop, 0},
    {"(b) buffer outside memory", case_outside, 0},
    {"(c) wrong direction", case_direction, 0},
    {"(d) short header", case_short_header, 0},
    {"(e) avail.idx=1000", case_avail_jump, 0},
    {"(f) queue size 7", case_queue_size, 0},
    {"(g) notify of disabled queue", case_notify_disabled, 0},
    {"(h) rings outside memory", case_rings_outside, 0},
    {"(i) DRIVER_OK without FEATURES_OK", case_no_features_ok, 0},
    {"(j) notify of queue 7", case_missing_queue, 0},
    {"(k) misaligned descriptor table", case_misaligned, 0},
    {"(l) sector past the end", case_past_end, 0},
    {"(m) indirect read", case_indirect_ok, 0},
    {"(n) indirect loop", case_indirect_loop, 0},
    {"(o) nested indirect table", case_indirect_nested, 0},
    {"(p) indirect table outside memory", case_indirect_outside, 0},
    {"(q) indirect table length 40", case_indirect_len, 0},
    {"(r) head descriptor 200", case_head_range, 0},
    {"(s) buffer in MMIO space", case_buffer_mmio, 0},
    {"(t) buffer wrapping the address space", case_buffer_wraps, 0},
    {"(u) buffer straddling the end of RAM", case_buffer_ram_end, 0},
    {"(v) queue size 512", case_queue_too_big, 0},
    {"(w) data over the descriptor table", case_data_over_ring, 0},
    {"(x) MSI-X to address 0", case_msix_bogus, 1},
};

/* ---- virtio-net ------------------------------------------------------------ */

#define VIRTIO_ID_NET 0x1041
#define NET_HDR 12 /* struct virtio_net_hdr_v1 */
#define RX_BUFS 4
#define RX_BUF_LEN 2048
/* Frames of this type are echoed by the host end (the test); others are not. */
#define ETH_ECHO 0x88b5
#define ETH_QUIET 0x88b6
/* The largest frame the device passes on (without the header): 64 KiB of GSO
 * payload, an Ethernet header and a VLAN tag. */
#define MAX_FRAME (65536 + 14 + 4)
/* How long to wait for the host's first frame and for an echo. */
#define HELLO_WAIT (30 * WAIT)
#define ECHO_WAIT (10 * WAIT)

static u8 net_rx_ring[4096] __attribute__((aligned(4096)));
static u8 net_tx_ring[4096] __attribute__((aligned(4096)));
static u8 net_rx_mem[RX_BUFS * RX_BUF_LEN] __attribute__((aligned(4096)));
static u8 net_tx_mem[2048] __attribute__((aligned(4096)));
static u8 net_big[NET_HDR + MAX_FRAME + 16] __attribute__((aligned(4096)));

static struct virtio_dev net;
static struct virtq nrx, ntx;
static u16 rx_seen;           /* receive completions consumed */
static const char *case_name; /* the case running, named in its frames */

static void qdesc(struct virtq *vq, u16 i, u64 addr, u32 len, u16 flags, u16 next)
{
    vq->desc[i].addr = addr;
    vq->desc[i].len = len;
    vq->desc[i].flags = flags;
    vq->desc[i].next = next;
}

/* Writes a zeroed virtio-net header and an Ethernet frame (broadcast, from the
 * NIC's MAC, of `type`) carrying the text "hostile:<a><b>" padded to 60 bytes;
 * returns the frame's length (without the header). */
static u32 build_frame(u8 *at, u16 type, const char *a, const char *b)
{
    u8 *f = at + NET_HDR;
    memset(at, 0, NET_HDR + 60);
    memset(f, 0xff, 6);
    for (u32 i = 0; i < 6; i++)
        f[6 + i] = mmio_read8(net.device, i);
    f[12] = (u8)(type >> 8);
    f[13] = (u8)type;
    u32 n = 14;
    const char *parts[3] = {"hostile:", a, b};
    for (u32 p = 0; p < 3; p++)
        for (const char *c = parts[p]; *c; c++)
            f[n++] = (u8)*c;
    return n < 60 ? 60 : n;
}

/* Full bring-up: VERSION_1 only (bare frames, no merged receive buffers),
 * receive queue 0 and transmit queue 1 of QSIZE entries. Returns the status. */
static u8 net_up(void)
{
    virtio_negotiate(&net, VIRTIO_F_VERSION_1);
    virtq_layout(&net, &nrx, 0, QSIZE, net_rx_ring);
    virtq_layout(&net, &ntx, 1, QSIZE, net_tx_ring);
    virtq_setup(&net, &nrx);
    virtq_setup(&net, &ntx);
    virtio_set_status(&net, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    rx_seen = 0;
    return virtio_status(&net);
}

/* Posts RX_BUFS receive buffers of RX_BUF_LEN bytes (descriptors 0..3). */
static void net_post_rx(void)
{
    for (u16 i = 0; i < RX_BUFS; i++) {
        qdesc(&nrx, i, (u64)(net_rx_mem + i * RX_BUF_LEN), RX_BUF_LEN, VRING_DESC_F_WRITE, 0);
        virtq_submit(&nrx, i);
    }
}

/* Submits transmit descriptor 0 as a chain head; returns the chains completed. */
static u16 net_tx_submit(void)
{
    u16 before = ntx.used->idx;
    virtq_submit(&ntx, 0);
    return (u16)(virtq_wait_used(&ntx, (u16)(before + 1), WAIT) - before);
}

/* Waits for the next received frame; returns its buffer and sets `len` (used
 * length, header included), or 0 if none came (or the device broke). The
 * buffer is posted again. */
static u8 *net_recv(u32 *len, u64 budget)
{
    u16 want = (u16)(rx_seen + 1);
    if (virtq_wait_used(&nrx, want, budget) != want)
        return 0;
    volatile struct vring_used_elem *e = &nrx.used->ring[rx_seen % nrx.size];
    u32 id = e->id;
    *len = e->len;
    rx_seen = want;
    if (id >= RX_BUFS)
        return 0;
    virtq_submit(&nrx, (u16)id);
    return net_rx_mem + id * RX_BUF_LEN;
}

/* Transmits an echoed frame "hostile:<a><b>" and waits for it to come back;
 * 0 on success, else a code. */
static u32 net_ping(const char *a, const char *b)
{
    u32 len = build_frame(net_tx_mem, ETH_ECHO, a, b);
    qdesc(&ntx, 0, (u64)net_tx_mem, NET_HDR + len, 0, 0);
    if (net_tx_submit() != 1)
        return 1;
    u32 got;
    u8 *buf = net_recv(&got, ECHO_WAIT);
    if (!buf)
        return 2;
    if (got != NET_HDR + len)
        return 3;
    if (!same(buf + NET_HDR, net_tx_mem + NET_HDR, len))
        return 4;
    return 0;
}

/* Prints what a device made of a case (like report, without a status byte). */
static void report_dev(struct virtio_dev *v, const char *name, u16 used)
{
    u8 ds = virtio_status(v);
    u8 isr = virtio_isr(v);
    say(name);
    puts(": used=");
    put_dec(used);
    puts(" device_status=0x");
    put_hex8(ds);
    puts(" isr=0x");
    put_hex8(isr);
    puts(ds & VIRTIO_NEEDS_RESET ? " needs_reset\n" : " running\n");
}

static void not_recovered(struct virtio_dev *v, const char *name, const char *what, u32 err)
{
    failures++;
    say(name);
    puts(": NOT ");
    puts(what);
    puts(", error ");
    put_dec(err);
    puts(" device_status=0x");
    put_hex8(virtio_status(v));
    putc('\n');
}

/* Resets the NIC and proves it sends and receives again. */
static void net_recover(const char *name)
{
    u8 s = net_up();
    net_post_rx();
    u32 err = s != 0x0f ? 10 : net_ping(name, "|recovered");
    if (err) {
        not_recovered(&net, name, "recovered", err);
        return;
    }
    say(name);
    puts(": recovered\n");
}

/* A correct bring-up with receive buffers; the cases then misbehave. */
static void net_ready(void)
{
    net_up();
    net_post_rx();
}

/* (a) transmit descriptors 0 -> 1 -> 0 -> ... */
static u16 net_case_tx_loop(void)
{
    net_ready();
    build_frame(net_tx_mem, ETH_QUIET, "loop", "");
    qdesc(&ntx, 0, (u64)net_tx_mem, 16, VRING_DESC_F_NEXT, 1);
    qdesc(&ntx, 1, (u64)net_tx_mem + 16, 60, VRING_DESC_F_NEXT, 0);
    return net_tx_submit();
}

/* (b) a transmit buffer far outside guest memory. */
static u16 net_case_tx_outside(void)
{
    net_ready();
    qdesc(&ntx, 0, UNMAPPED, NET_HDR + 60, 0, 0);
    return net_tx_submit();
}

/* (c) the frame in a device-writable buffer after a readable header. */
static u16 net_case_tx_writable(void)
{
    net_ready();
    u32 len = build_frame(net_tx_mem, ETH_QUIET, "writable", "");
    qdesc(&ntx, 0, (u64)net_tx_mem, NET_HDR, VRING_DESC_F_NEXT, 1);
    qdesc(&ntx, 1, (u64)net_tx_mem + NET_HDR, len, VRING_DESC_F_WRITE, 0);
    return net_tx_submit();
}

/* (d) the largest frame the device takes: it goes out (not echoed). */
static u16 net_case_tx_largest(void)
{
    net_ready();
    build_frame(net_big, ETH_QUIET, case_name, "|largest");
    qdesc(&ntx, 0, (u64)net_big, NET_HDR + MAX_FRAME, 0, 0);
    return net_tx_submit();
}

/* (e) one byte more, in two buffers: dropped, the device keeps working. */
static u16 net_case_tx_giant(void)
{
    net_ready();
    build_frame(net_big, ETH_QUIET, case_name, "|sent");
    qdesc(&ntx, 0, (u64)net_big, NET_HDR + 14, VRING_DESC_F_NEXT, 1);
    qdesc(&ntx, 1, (u64)net_big + NET_HDR + 14, MAX_FRAME + 1 - 14, 0, 0);
    return net_tx_submit();
}

/* (f) a header and 10 bytes of frame: dropped, the device keeps working. */
static u16 net_case_tx_runt(void)
{
    net_ready();
    build_frame(net_tx_mem, ETH_ECHO, "runt", "");
    qdesc(&ntx, 0, (u64)net_tx_mem, NET_HDR + 10, 0, 0);
    return net_tx_submit();
}

/* Posts one receive buffer of `len` bytes with `flags`, transmits an echoed
 * frame and waits until the echo meets the buffer; returns the receive
 * completions. */
static u16 net_rx_trap(u32 len, u16 flags)
{
    net_up();
    qdesc(&nrx, 0, (u64)net_rx_mem, len, flags, 0);
    virtq_submit(&nrx, 0);
    u32 flen = build_frame(net_tx_mem, ETH_ECHO, case_name, "|trigger");
    qdesc(&ntx, 0, (u64)net_tx_mem, NET_HDR + flen, 0, 0);
    net_tx_submit();
    return virtq_wait_used(&nrx, 1, ECHO_WAIT);
}

/* (g) a device-readable receive buffer. */
static u16 net_case_rx_readonly(void)
{
    return net_rx_trap(RX_BUF_LEN, 0);
}

/* (h) a receive buffer shorter than the virtio-net header. */
static u16 net_case_rx_short(void)
{
    return net_rx_trap(8, VRING_DESC_F_WRITE);
}

static const struct {
    const char *name;
    u16 (*run)(void);
    int keeps_running; /* then a frame is echoed before the reset */
} net_cases_tab[] = {
    {"virtio-net (a) TX descriptor loop", net_case_tx_loop, 0},
    {"virtio-net (b) TX buffer outside memory", net_case_tx_outside, 0},
    {"virtio-net (c) device-writable TX buffer", net_case_tx_writable, 0},
    {"virtio-net (d) largest TX frame", net_case_tx_largest, 1},
    {"virtio-net (e) TX frame one byte too long", net_case_tx_giant, 1},
    {"virtio-net (f) runt TX frame", net_case_tx_runt, 1},
    {"virtio-net (g) read-only RX buffer", net_case_rx_readonly, 0},
    {"virtio-net (h) RX buffer of 8 bytes", net_case_rx_short, 0},
};

/* The NIC's cases. The host end sends one frame "hostile:hello" (type 0x88b5)
 * once connected, and echoes every frame of type 0x88b5 up to 1514 bytes. */
static int net_cases(int mmio)
{
    int err = mmio ? virtio_probe_mmio(&net, 1) : virtio_probe(&net, VIRTIO_ID_NET);
    if (err) {
        failures++;
        say("no usable virtio-net device\n");
        return 0;
    }
    say("virtio-net at ");
    if (mmio) {
        puts("virtio-mmio window ");
        put_dec(net.pci_dev);
    } else {
        puts("PCI 00:");
        put_hex8((u8)net.pci_dev);
        puts(".0, ");
        put_dec(mmio_read16(net.common, VC_NUM_QUEUES));
        puts(" queue(s)");
    }
    putc('\n');

    u8 s = net_up();
    net_post_rx();
    u32 len = 0;
    u8 *hello = net_recv(&len, HELLO_WAIT);
    static const char want[] = "hostile:hello";
    if (s != 0x0f || !hello || !same(hello + NET_HDR + 14, (const u8 *)want, sizeof(want))) {
        failures++;
        say("virtio-net: no hello from the host\n");
        return 0;
    }
    say("virtio-net: hello from the host, len=");
    put_dec(len);
    putc('\n');
    err = (int)net_ping("start", "");
    if (err) {
        not_recovered(&net, "virtio-net", "echoing", (u32)err);
        return 0;
    }
    say("virtio-net: echo works\n");

    for (u32 i = 0; i < sizeof(net_cases_tab) / sizeof(net_cases_tab[0]); i++) {
        const char *name = case_name = net_cases_tab[i].name;
        u16 used = net_cases_tab[i].run();
        report_dev(&net, name, used);
        if (net_cases_tab[i].keeps_running) {
            u32 e = net_ping(name, "|next");
            if (e) {
                not_recovered(&net, name, "sending the next frame", e);
            } else {
                say(name);
                puts(": next frame echoed\n");
            }
        }
        net_recover(name);
    }
    return 1;
}

/* ---- virtio-balloon -------------------------------------------------------- */

#define VIRTIO_ID_BALLOON 0x1045
#define BAL_F_STATS_VQ (1UL << 1)
#define BAL_F_DEFLATE_ON_OOM (1UL << 2)
#define BAL_F_PAGE_REPORTING (1UL << 5)
/* With all of them acked: inflateq 0, deflateq 1, statsq 2, reporting_vq 3. */
#define BAL_FEATURES (VIRTIO_F_VERSION_1 | BAL_F_STATS_VQ | BAL_F_DEFLATE_ON_OOM | BAL_F_PAGE_REPORTING)
enum { INFLATEQ, DEFLATEQ, STATSQ, REPORTQ, BAL_QUEUES };

static u8 bal_rings[BAL_QUEUES][4096] __attribute__((aligned(4096)));
static u8 bal_page[4096] __attribute__((aligned(4096)));  /* inflated, deflated */
static u8 bal_range[8192] __attribute__((aligned(4096))); /* reported free */
static u8 bal_buf[4096] __attribute__((aligned(4096)));   /* PFNs, statistics */
#define BAL_PFNS ((volatile u32 *)bal_buf)
#define BAL_STATS (bal_buf + 0x100)

static struct virtio_dev bal;
static struct virtq bq[BAL_QUEUES];

static u8 bal_up(void)
{
    virtio_negotiate(&bal, BAL_FEATURES);
    for (u16 i = 0; i < BAL_QUEUES; i++) {
        virtq_layout(&bal, &bq[i], i, QSIZE, bal_rings[i]);
        virtq_setup(&bal, &bq[i]);
    }
    virtio_set_status(&bal, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
    return virtio_status(&bal);
}

/* One buffer on queue `qi`; returns the chains completed within `budget`. */
static u16 bal_submit(u16 qi, u64 addr, u32 len, u16 flags, u64 budget)
{
    struct virtq *vq = &bq[qi];
    qdesc(vq, 0, addr, len, flags, 0);
    u16 before = vq->used->idx;
    virtq_submit(vq, 0);
    return (u16)(virtq_wait_used(vq, (u16)(before + 1), budget) - before);
}

static void put_le(u8 *p, u64 v, u32 n)
{
    for (u32 i = 0; i < n; i++)
        p[i] = (u8)(v >> (8 * i));
}

/* Inflates and deflates a page, reports a free range and hands over a
 * statistics buffer (which the device keeps); 0 on success, else a code. */
static u32 bal_works(void)
{
    BAL_PFNS[0] = (u32)((u64)bal_page >> 12);
    if (bal_submit(INFLATEQ, (u64)bal_buf, 4, 0, WAIT) != 1)
        return 1;
    if (bal_submit(DEFLATEQ, (u64)bal_buf, 4, 0, WAIT) != 1)
        return 2;
    if (bal_submit(REPORTQ, (u64)bal_range, sizeof(bal_range), VRING_DESC_F_WRITE, WAIT) != 1)
        return 3;
    put_le(BAL_STATS, 4, 2); /* free memory */
    put_le(BAL_STATS + 2, ram_end / 2, 8);
    put_le(BAL_STATS + 10, 5, 2); /* total memory */
    put_le(BAL_STATS + 12, ram_end, 8);
    /* Held until the host asks for fresh figures: nothing to wait for. */
    if (bal_submit(STATSQ, (u64)BAL_STATS, 20, 0, 0) != 0)
        return 4;
    if (virtio_status(&bal) != 0x0f)
        return 5;
    return 0;
}

static void bal_recover(const char *name)
{
    u8 s = bal_up();
    u32 err = s != 0x0f ? 10 : bal_works();
    if (err) {
        not_recovered(&bal, name, "recovered", err);
        return;
    }
    say(name);
    puts(": recovered\n");
}

/* (a) inflating the first page past the end of RAM. */
static u16 bal_case_inflate_outside(void)
{
    bal_up();
    BAL_PFNS[0] = (u32)(ram_end >> 12);
    return bal_submit(INFLATEQ, (u64)bal_buf, 4, 0, WAIT);
}

/* (b) deflating the last PFN there is (16 TiB - 4 KiB). */
static u16 bal_case_deflate_outside(void)
{
    bal_up();
    BAL_PFNS[0] = 0xffffffffu;
    return bal_submit(DEFLATEQ, (u64)bal_buf, 4, 0, WAIT);
}

/* (c) a PFN buffer of 6 bytes. */
static u16 bal_case_pfn_len(void)
{
    bal_up();
    BAL_PFNS[0] = (u32)((u64)bal_page >> 12);
    BAL_PFNS[1] = (u32)((u64)bal_page >> 12);
    return bal_submit(INFLATEQ, (u64)bal_buf, 6, 0, WAIT);
}

/* (d) a reported range running past the end of RAM. */
static u16 bal_case_report_past_end(void)
{
    bal_up();
    return bal_submit(REPORTQ, ram_end - 4096, 8192, VRING_DESC_F_WRITE, WAIT);
}

/* (e) a reported range that is not page aligned. */
static u16 bal_case_report_unaligned(void)
{
    bal_up();
    return bal_submit(REPORTQ, (u64)bal_range + 0x800, 4096, VRING_DESC_F_WRITE, WAIT);
}

/* (f) a statistics buffer of 15 bytes (one and a half entries). */
static u16 bal_case_stats_len(void)
{
    bal_up();
    return bal_submit(STATSQ, (u64)BAL_STATS, 15, 0, WAIT);
}

static const struct {
    const char *name;
    u16 (*run)(void);
} bal_cases_tab[] = {
    {"virtio-balloon (a) inflate a PFN outside RAM", bal_case_inflate_outside},
    {"virtio-balloon (b) deflate a PFN outside RAM", bal_case_deflate_outside},
    {"virtio-balloon (c) PFN buffer of 6 bytes", bal_case_pfn_len},
    {"virtio-balloon (d) reported range past the end of RAM", bal_case_report_past_end},
    {"virtio-balloon (e) reported range not page aligned", bal_case_report_unaligned},
    {"virtio-balloon (f) statistics buffer of 15 bytes", bal_case_stats_len},
};

static int balloon_cases(int mmio)
{
    int err = mmio ? virtio_probe_mmio(&bal, 5) : virtio_probe(&bal, VIRTIO_ID_BALLOON);
    if (err) {
        failures++;
        say("no usable virtio-balloon device\n");
        return 0;
    }
    say("virtio-balloon at ");
    if (mmio) {
        puts("virtio-mmio window ");
        put_dec(bal.pci_dev);
    } else {
        puts("PCI 00:");
        put_hex8((u8)bal.pci_dev);
        puts(".0, ");
        put_dec(mmio_read16(bal.common, VC_NUM_QUEUES));
        puts(" queue(s)");
    }
    putc('\n');
    u8 s = bal_up();
    u32 e = s != 0x0f ? 10 : bal_works();
    if (e) {
        not_recovered(&bal, "virtio-balloon", "working", e);
        return 0;
    }
    say("virtio-balloon: inflate, deflate, report and statistics work\n");
    for (u32 i = 0; i < sizeof(bal_cases_tab) / sizeof(bal_cases_tab[0]); i++) {
        u16 used = bal_cases_tab[i].run();
        report_dev(&bal, bal_cases_tab[i].name, used);
        bal_recover(bal_cases_tab[i].name);
    }
    return 1;
}

/* Another device must be unaffected: 16 bytes from virtio-rng. */
static void check_rng(void)
{
    struct virtio_dev rng;
    struct virtq rq;
    int err = blk.mmio ? virtio_probe_mmio(&rng, 4) : virtio_probe(&rng, VIRTIO_ID_RNG);
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
    u16 used = virtq_wait_used(&rq, 1, WAIT);
    say("virtio-rng: used=");
    put_dec(used);
    puts(" len=");
    put_dec(used ? rq.used->ring[0].len : 0);
    putc('\n');
    virtio_reset(&rng);
}

void guest_main(const char *cmdline)
{
    ram_end = cmdline_u64(cmdline, "ram_mib=", 128) << 20;
    int mmio = cmdline_u64(cmdline, "mmio=", 0) != 0;
    int err = mmio ? virtio_probe_mmio(&blk, 2) : virtio_probe(&blk, VIRTIO_ID_BLOCK);
    if (err) {
        say("no usable virtio-blk device, error ");
        put_dec((u64)-err);
        putc('\n');
        reset();
    }
    say("virtio-blk at ");
    if (mmio) {
        puts("virtio-mmio window ");
        put_dec(blk.pci_dev);
    } else {
        puts("PCI 00:");
        put_hex8((u8)blk.pci_dev);
        puts(".0, ");
        put_dec(mmio_read16(blk.common, VC_NUM_QUEUES));
        puts(" queue(s), notify multiplier ");
        put_dec(blk.notify_mul);
    }
    puts(", queue 0 max size ");
    virtio_reset(&blk);
    virtio_select_queue(&blk, 0);
    put_dec(virtio_queue_max(&blk));
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
        if (cases[i].pci_only && blk.mmio)
            continue;
        u16 used = cases[i].run();
        report(cases[i].name, used);
        recover(cases[i].name);
    }

    int net_ok = cmdline_u64(cmdline, "net=", 0) && net_cases(mmio);
    int bal_ok = cmdline_u64(cmdline, "balloon=", 0) && balloon_cases(mmio);

    check_rng();
    /* The NIC and the balloon after everything else misbehaved. */
    if (net_ok) {
        u8 s = net_up();
        net_post_rx();
        u32 err = s != 0x0f ? 10 : net_ping("final", "");
        if (err)
            not_recovered(&net, "virtio-net", "working at the end", err);
        else
            say("virtio-net: final frame echoed\n");
        virtio_reset(&net);
    }
    if (bal_ok) {
        u8 s = bal_up();
        u32 err = s != 0x0f ? 10 : bal_works();
        if (err)
            not_recovered(&bal, "virtio-balloon", "working at the end", err);
        else
            say("virtio-balloon: still works\n");
        virtio_reset(&bal);
    }

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
