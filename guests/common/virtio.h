/* A minimal virtio 1.x modern PCI driver for the test guests (virtio 1.2, 4.1):
 * finds the device's structures through its vendor capabilities, negotiates
 * features and programs split virtqueues. Polling only (interrupts stay off).
 * Every step is a separate function so a guest can also misprogram the device
 * on purpose. Header-only (static inline). */
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

/* Vendor capability types. */
#define VIRTIO_CAP_COMMON 1
#define VIRTIO_CAP_NOTIFY 2
#define VIRTIO_CAP_ISR 3
#define VIRTIO_CAP_DEVICE 4

/* Descriptor flags. */
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static inline u8 mmio_read8(volatile u8 *base, u32 off) { return *(volatile u8 *)(base + off); }
static inline u16 mmio_read16(volatile u8 *base, u32 off) { return *(volatile u16 *)(base + off); }
static inline u32 mmio_read32(volatile u8 *base, u32 off) { return *(volatile u32 *)(base + off); }
static inline void mmio_write8(volatile u8 *base, u32 off, u8 v) { *(volatile u8 *)(base + off) = v; }
static inline void mmio_write16(volatile u8 *base, u32 off, u16 v) { *(volatile u16 *)(base + off) = v; }
static inline void mmio_write32(volatile u8 *base, u32 off, u32 v) { *(volatile u32 *)(base + off) = v; }

struct virtio_dev {
    u32 pci_dev;
    volatile u8 *common;
    volatile u8 *isr;
    volatile u8 *device;
    volatile u8 *notify;
    u32 notify_mul;
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
    volatile u16 *doorbell;
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

static inline u8 virtio_status(struct virtio_dev *v) { return mmio_read8(v->common, VC_DEVICE_STATUS); }
static inline void virtio_set_status(struct virtio_dev *v, u8 s) { mmio_write8(v->common, VC_DEVICE_STATUS, s); }
/* Reads (and so clears) the ISR status. */
static inline u8 virtio_isr(struct virtio_dev *v) { return mmio_read8(v->isr, 0); }

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
    virtio_reset(v);
    virtio_set_status(v, VIRTIO_ACKNOWLEDGE);
    virtio_set_status(v, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER);
    mmio_write32(v->common, VC_DEVICE_FEATURE_SELECT, 0);
    u64 offered = mmio_read32(v->common, VC_DEVICE_FEATURE);
    mmio_write32(v->common, VC_DEVICE_FEATURE_SELECT, 1);
    offered |= (u64)mmio_read32(v->common, VC_DEVICE_FEATURE) << 32;
    features &= offered;
    mmio_write32(v->common, VC_DRIVER_FEATURE_SELECT, 0);
    mmio_write32(v->common, VC_DRIVER_FEATURE, (u32)features);
    mmio_write32(v->common, VC_DRIVER_FEATURE_SELECT, 1);
    mmio_write32(v->common, VC_DRIVER_FEATURE, (u32)(features >> 32));
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
 * the used ring at 0x800, and looks up the queue's doorbell. */
static inline void virtq_layout(struct virtio_dev *v, struct virtq *q, u16 index, u16 size, u8 *mem)
{
    memset(mem, 0, 4096);
    q->index = index;
    q->size = size;
    q->desc = (volatile struct vring_desc *)mem;
    q->avail = (volatile struct vring_avail *)(mem + 0x400);
    q->used = (volatile struct vring_used *)(mem + 0x800);
    q->next_avail = 0;
    mmio_write16(v->common, VC_QUEUE_SELECT, index);
    u16 off = mmio_read16(v->common, VC_QUEUE_NOTIFY_OFF);
    q->doorbell = (volatile u16 *)(v->notify + (u32)off * v->notify_mul);
}

/* Programs the selected queue's size and ring addresses (as given, valid or not). */
static inline void virtio_program_queue(struct virtio_dev *v, u16 index, u16 size, u64 desc, u64 driver,
                                        u64 device)
{
    mmio_write16(v->common, VC_QUEUE_SELECT, index);
    mmio_write16(v->common, VC_QUEUE_SIZE, size);
    virtio_write_addr(v, VC_QUEUE_DESC, desc);
    virtio_write_addr(v, VC_QUEUE_DRIVER, driver);
    virtio_write_addr(v, VC_QUEUE_DEVICE, device);
}

static inline void virtio_enable_queue(struct virtio_dev *v, u16 index)
{
    mmio_write16(v->common, VC_QUEUE_SELECT, index);
    mmio_write16(v->common, VC_QUEUE_ENABLE, 1);
}

/* Programs and enables `q` as laid out by virtq_layout. */
static inline void virtq_setup(struct virtio_dev *v, struct virtq *q)
{
    virtio_program_queue(v, q->index, q->size, (u64)q->desc, (u64)q->avail, (u64)q->used);
    virtio_enable_queue(v, q->index);
}

/* Rings the doorbell of queue `index` (the 16-bit queue index is the value). */
static inline void virtio_notify(struct virtio_dev *v, u16 index)
{
    mmio_write16(v->common, VC_QUEUE_SELECT, index);
    u16 off = mmio_read16(v->common, VC_QUEUE_NOTIFY_OFF);
    barrier();
    *(volatile u16 *)(v->notify + (u32)off * v->notify_mul) = index;
}

/* Makes the chain starting at `head` available and rings the doorbell. */
static inline void virtq_submit(struct virtq *q, u16 head)
{
    q->avail->ring[q->next_avail % q->size] = head;
    barrier();
    q->next_avail++;
    q->avail->idx = q->next_avail;
    barrier();
    *q->doorbell = q->index;
}

/* Waits (at most `spins` polls) until the used index reaches `want`; returns
 * the used index seen last. */
static inline u16 virtq_wait_used(struct virtq *q, u16 want, u32 spins)
{
    u16 idx = q->used->idx;
    while (idx != want && spins--) {
        cpu_relax();
        idx = q->used->idx;
    }
    barrier();
    return idx;
}

#endif
