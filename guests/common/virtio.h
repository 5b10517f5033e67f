/* A minimal virtio 1.x driver for the test guests over both transports: modern
 * PCI (virtio 1.2, 4.1; structures found through the vendor capabilities) and
 * virtio-mmio version 2 (4.2; register windows at 0xf0000000 + n * 0x1000).
 * Negotiates features and programs split virtqueues; polling only (interrupts
 * stay off). Every step is a separate function so a guest can also misprogram
 * the device on purpose. Header-only (static inline). */
#ifndef VIRTIO_H
#define VIRTIO_H

#include "guest.h"
#include "pci.h"

#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_ID_BLOCK 0x1042
#define VIRTIO_ID_CONSOLE 0x1043
#define VIRTIO_ID_RNG 0x1044

/* Device status bits. */
#define VIRTIO_ACKNOWLEDGE 0x01
#define VIRTIO_DRIVER 0x02
#define VIRTIO_DRIVER_OK 0x04
#define VIRTIO_FEATURES_OK 0x08
#define VIRTIO_NEEDS_RESET 0x40
#define VIRTIO_FAILED 0x80

/* Common configuration structure offsets. */
#define VC_DEVICE_FEATURE_SELECT 0x00
#define VC_DEVICE_FEATURE 0x04
#define VC_DRIVER_FEATURE_SELECT 0x08
#define VC_DRIVER_FEATURE 0x0c
#define VC_MSIX_CONFIG 0x10
#define VC_NUM_QUEUES 0x12
#define VC_DEVICE_STATUS 0x14
#define VC_CONFIG_GENERATION 0x15
#define VC_QUEUE_SELECT 0x16
#define VC_QUEUE_SIZE 0x18
#define VC_QUEUE_MSIX_VECTOR 0x1a
#define VC_QUEUE_ENABLE 0x1c
#define VC_QUEUE_NOTIFY_OFF 0x1e
#define VC_QUEUE_DESC 0x20
#define VC_QUEUE_DRIVER 0x28
#define VC_QUEUE_DEVICE 0x30

/* virtio-mmio registers (version 2). */
#define VM_MAGIC 0x000
#define VM_VERSION 0x004
#define VM_DEVICE_ID 0x008
#define VM_DEVICE_FEATURES 0x010
#define VM_DEVICE_FEATURES_SEL 0x014
#define VM_DRIVER_FEATURES 0x020
#define VM_DRIVER_FEATURES_SEL 0x024
#define VM_QUEUE_SEL 0x030
#define VM_QUEUE_NUM_MAX 0x034
#define VM_QUEUE_NUM 0x038
#define VM_QUEUE_READY 0x044
#define VM_QUEUE_NOTIFY 0x050
#define VM_INTERRUPT_STATUS 0x060
#define VM_INTERRUPT_ACK 0x064
#define VM_STATUS 0x070
#define VM_QUEUE_DESC 0x080
#define VM_QUEUE_DRIVER 0x090
#define VM_QUEUE_DEVICE 0x0a0
#define VIRTIO_MMIO_BASE 0xf0000000UL
#define VIRTIO_MMIO_STRIDE 0x1000
#define VIRTIO_MMIO_MAX 32

/* Vendor capability types. */
#define VIRTIO_CAP_COMMON 1
#define VIRTIO_CAP_NOTIFY 2
#define VIRTIO_CAP_ISR 3
#define VIRTIO_CAP_DEVICE 4

/* Feature bits. */
#define VIRTIO_F_INDIRECT_DESC (1UL << 28)
#define VIRTIO_F_EVENT_IDX (1UL << 29)
#define VIRTIO_F_VERSION_1 (1UL << 32)

/* Descriptor flags. */
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static inline u8 mmio_read8(volatile u8 *base, u32 off) { return *(volatile u8 *)(base + off); }
static inline u16 mmio_read16(volatile u8 *base, u32 off) { return *(volatile u16 *)(base + off); }
static inline u32 mmio_read32(volatile u8 *base, u32 off) { return *(volatile u32 *)(base + off); }
static inline void mmio_write8(volatile u8 *base, u32 off, u8 v) { *(volatile u8 *)(base + off) = v; }
static inline void mmio_write16(volatile u8 *base, u32 off, u16 v) { *(volatile u16 *)(base + off) = v; }
static inline void mmio_write32(volatile u8 *base, u32 off, u32 v) { *(volatile u32 *)(base + off) = v; }

struct virtio_dev {
    int mmio;            /* virtio-mmio (else PCI) */
    u32 pci_dev;         /* PCI: slot on bus 0; MMIO: window number */
    volatile u8 *common; /* PCI: common configuration; MMIO: the register window */
    volatile u8 *isr;    /* PCI only */
    volatile u8 *device; /* device-specific configuration */
    volatile u8 *notify; /* PCI only: the notification structure */
    u32 notify_mul;      /* PCI only: notify_off_multiplier */
};

struct vring_desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
};

struct vring_avail {
    u16 flags;
    u16 idx;
    u16 ring[];
};

struct vring_used_elem {
    u32 id;
    u32 len;
};

struct vring_used {
    u16 flags;
    u16 idx;
    struct vring_used_elem ring[];
};

/* A split virtqueue as the driver sees it. */
struct virtq {
    u16 index;
    u16 size;
    volatile struct vring_desc *desc;
    volatile struct vring_avail *avail;
    volatile struct vring_used *used;
    u16 next_avail; /* driver's copy of avail->idx */
    struct virtio_dev *dev;
};

/* Errors of virtio_probe. */
#define VIRTIO_ERR_NOT_FOUND (-1)
#define VIRTIO_ERR_NO_CAPS (-2)
#define VIRTIO_ERR_BAR (-3)

/* Finds the first virtio PCI device with `device_id` on bus 0 and the four
 * structures its vendor capabilities describe (the first of each type). Only
 * BARs below 4 GiB (identity-mapped by the runtime) are accepted. */
static inline int virtio_probe(struct virtio_dev *v, u16 device_id)
{
    int dev = pci_find(VIRTIO_VENDOR, device_id);
    if (dev < 0)
        return VIRTIO_ERR_NOT_FOUND;
    memset(v, 0, sizeof(*v));
    v->pci_dev = (u32)dev;
    for (u32 cap = pci_first_cap(v->pci_dev); cap; cap = pci_next_cap(v->pci_dev, cap)) {
        u32 head = pci_read32(v->pci_dev, 0, cap);
        if ((head & 0xff) != 0x09)
            continue;
        u32 type = (head >> 24) & 0xff;
        u32 bar = pci_read8(v->pci_dev, 0, cap + 4);
        u32 off = pci_read32(v->pci_dev, 0, cap + 8);
        if (type < VIRTIO_CAP_COMMON || type > VIRTIO_CAP_DEVICE || bar > 5)
            continue;
        u64 base = pci_bar_addr(v->pci_dev, bar);
        if (!base || base + off >= 0x100000000UL)
            return VIRTIO_ERR_BAR;
        volatile u8 *p = (volatile u8 *)(base + off);
        switch (type) {
        case VIRTIO_CAP_COMMON:
            if (!v->common)
                v->common = p;
            break;
        case VIRTIO_CAP_NOTIFY:
            if (!v->notify) {
                v->notify = p;
                v->notify_mul = pci_read32(v->pci_dev, 0, cap + 16);
            }
            break;
        case VIRTIO_CAP_ISR:
            if (!v->isr)
                v->isr = p;
            break;
        case VIRTIO_CAP_DEVICE:
            if (!v->device)
                v->device = p;
            break;
        }
    }
    if (!v->common || !v->notify || !v->isr)
        return VIRTIO_ERR_NO_CAPS;
    return 0;
}

/* Finds the first virtio-mmio window holding a device of type `device_type`
 * (2: block, 3: console, 4: entropy). */
static inline int virtio_probe_mmio(struct virtio_dev *v, u32 device_type)
{
    for (u32 n = 0; n < VIRTIO_MMIO_MAX; n++) {
        volatile u8 *base = (volatile u8 *)(VIRTIO_MMIO_BASE + n * VIRTIO_MMIO_STRIDE);
        if (mmio_read32(base, VM_MAGIC) != 0x74726976)
            break;
        if (mmio_read32(base, VM_VERSION) != 2 || mmio_read32(base, VM_DEVICE_ID) != device_type)
            continue;
        memset(v, 0, sizeof(*v));
        v->mmio = 1;
        v->pci_dev = n;
        v->common = base;
        v->device = base + 0x100;
        return 0;
    }
    return VIRTIO_ERR_NOT_FOUND;
}

static inline u8 virtio_status(struct virtio_dev *v)
{
    return v->mmio ? (u8)mmio_read32(v->common, VM_STATUS) : mmio_read8(v->common, VC_DEVICE_STATUS);
}

static inline void virtio_set_status(struct virtio_dev *v, u8 s)
{
    if (v->mmio)
        mmio_write32(v->common, VM_STATUS, s);
    else
        mmio_write8(v->common, VC_DEVICE_STATUS, s);
}

/* Reads and clears the interrupt status (PCI: the ISR, cleared by the read;
 * MMIO: InterruptStatus, acknowledged). Bit 0: used buffer, bit 1: configuration. */
static inline u8 virtio_isr(struct virtio_dev *v)
{
    if (!v->mmio)
        return mmio_read8(v->isr, 0);
    u32 s = mmio_read32(v->common, VM_INTERRUPT_STATUS);
    mmio_write32(v->common, VM_INTERRUPT_ACK, s);
    return (u8)s;
}

/* Selects queue `index` for the queue registers. */
static inline void virtio_select_queue(struct virtio_dev *v, u16 index)
{
    if (v->mmio)
        mmio_write32(v->common, VM_QUEUE_SEL, index);
    else
        mmio_write16(v->common, VC_QUEUE_SELECT, index);
}

/* Maximum size of the selected queue (MMIO: QueueNumMax; PCI: queue_size after reset). */
static inline u16 virtio_queue_max(struct virtio_dev *v)
{
    return v->mmio ? (u16)mmio_read32(v->common, VM_QUEUE_NUM_MAX) : mmio_read16(v->common, VC_QUEUE_SIZE);
}

/* Resets the device; returns the status read back (0 once the reset is done). */
static inline u8 virtio_reset(struct virtio_dev *v)
{
    virtio_set_status(v, 0);
    return virtio_status(v);
}

/* Reset, ACKNOWLEDGE, DRIVER, then accept `features` (which must be offered) and
 * set FEATURES_OK. Returns the status read back: FEATURES_OK is clear if the
 * device refused the features. */
static inline u8 virtio_negotiate(struct virtio_dev *v, u64 features)
{
    u32 dsel = v->mmio ? VM_DEVICE_FEATURES_SEL : VC_DEVICE_FEATURE_SELECT;
    u32 dfeat = v->mmio ? VM_DEVICE_FEATURES : VC_DEVICE_FEATURE;
    u32 gsel = v->mmio ? VM_DRIVER_FEATURES_SEL : VC_DRIVER_FEATURE_SELECT;
    u32 gfeat = v->mmio ? VM_DRIVER_FEATURES : VC_DRIVER_FEATURE;
    virtio_reset(v);
    virtio_set_status(v, VIRTIO_ACKNOWLEDGE);
    virtio_set_status(v, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER);
    mmio_write32(v->common, dsel, 0);
    u64 offered = mmio_read32(v->common, dfeat);
    mmio_write32(v->common, dsel, 1);
    offered |= (u64)mmio_read32(v->common, dfeat) << 32;
    features &= offered;
    mmio_write32(v->common, gsel, 0);
    mmio_write32(v->common, gfeat, (u32)features);
    mmio_write32(v->common, gsel, 1);
    mmio_write32(v->common, gfeat, (u32)(features >> 32));
    virtio_set_status(v, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK);
    return virtio_status(v);
}

static inline void virtio_write_addr(struct virtio_dev *v, u32 reg, u64 addr)
{
    mmio_write32(v->common, reg, (u32)addr);
    mmio_write32(v->common, reg + 4, (u32)(addr >> 32));
}

/* Lays out queue `index` of `size` (at most 64) entries in `mem` (4 KiB, 4 KiB
 * aligned, zeroed here): the descriptor table at 0, the available ring at 0x400,
 * the used ring at 0x800. Does not touch the device. */
static inline void virtq_layout(struct virtio_dev *v, struct virtq *q, u16 index, u16 size, u8 *mem)
{
    memset(mem, 0, 4096);
    q->index = index;
    q->size = size;
    q->desc = (volatile struct vring_desc *)mem;
    q->avail = (volatile struct vring_avail *)(mem + 0x400);
    q->used = (volatile struct vring_used *)(mem + 0x800);
    q->next_avail = 0;
    q->dev = v;
}

/* Programs queue `index`'s size and ring addresses (as given, valid or not). */
static inline void virtio_program_queue(struct virtio_dev *v, u16 index, u16 size, u64 desc, u64 driver,
                                        u64 device)
{
    virtio_select_queue(v, index);
    if (v->mmio) {
        mmio_write32(v->common, VM_QUEUE_NUM, size);
        virtio_write_addr(v, VM_QUEUE_DESC, desc);
        virtio_write_addr(v, VM_QUEUE_DRIVER, driver);
        virtio_write_addr(v, VM_QUEUE_DEVICE, device);
    } else {
        mmio_write16(v->common, VC_QUEUE_SIZE, size);
        virtio_write_addr(v, VC_QUEUE_DESC, desc);
        virtio_write_addr(v, VC_QUEUE_DRIVER, driver);
        virtio_write_addr(v, VC_QUEUE_DEVICE, device);
    }
}

static inline void virtio_enable_queue(struct virtio_dev *v, u16 index)
{
    virtio_select_queue(v, index);
    if (v->mmio)
        mmio_write32(v->common, VM_QUEUE_READY, 1);
    else
        mmio_write16(v->common, VC_QUEUE_ENABLE, 1);
}

/* Programs and enables `q` as laid out by virtq_layout. */
static inline void virtq_setup(struct virtio_dev *v, struct virtq *q)
{
    virtio_program_queue(v, q->index, q->size, (u64)q->desc, (u64)q->avail, (u64)q->used);
    virtio_enable_queue(v, q->index);
}

/* Rings the doorbell of queue `index` (PCI: at the queue's notify offset; MMIO:
 * QueueNotify), without touching the queue registers (no queue_select). */
static inline void virtio_doorbell(struct virtio_dev *v, u16 index, u16 notify_off)
{
    barrier();
    if (v->mmio)
        mmio_write32(v->common, VM_QUEUE_NOTIFY, index);
    else
        mmio_write16(v->notify, (u32)notify_off * v->notify_mul, index);
}

/* Rings the doorbell of queue `index` as a driver should (PCI: looks up the
 * queue's notify offset first). */
static inline void virtio_notify(struct virtio_dev *v, u16 index)
{
    u16 off = 0;
    if (!v->mmio) {
        virtio_select_queue(v, index);
        off = mmio_read16(v->common, VC_QUEUE_NOTIFY_OFF);
    }
    virtio_doorbell(v, index, off);
}

/* Makes the chain starting at `head` available and rings the doorbell. */
static inline void virtq_submit(struct virtq *q, u16 head)
{
    q->avail->ring[q->next_avail % q->size] = head;
    barrier();
    q->next_avail++;
    q->avail->idx = q->next_avail;
    virtio_notify(q->dev, q->index);
}

/* Waits until the used index reaches `want`, the device reports
 * DEVICE_NEEDS_RESET (it will complete nothing more), or `tsc_budget` TSC ticks
 * pass (for devices that complete requests asynchronously); returns the used
 * index seen last. */
static inline u16 virtq_wait_used(struct virtq *q, u16 want, u64 tsc_budget)
{
    u64 start = rdtsc();
    u16 idx = q->used->idx;
    for (u32 n = 0; idx != want; n++) {
        if (n % 256 == 0 && ((virtio_status(q->dev) & VIRTIO_NEEDS_RESET) || rdtsc() - start > tsc_budget))
            break;
        cpu_relax();
        idx = q->used->idx;
    }
    barrier();
    return idx;
}

#endif
