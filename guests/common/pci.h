/* PCI configuration access for the test guests: configuration mechanism #1
 * (CONFIG_ADDRESS 0xcf8, CONFIG_DATA 0xcfc), bus 0 only. Header-only (static
 * inline) so guests that do not use it pay nothing. */
#ifndef PCI_H
#define PCI_H

#include "guest.h"

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA 0xcfc

static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline u32 pci_addr(u32 dev, u32 fn, u32 off)
{
    return 0x80000000u | (dev << 11) | (fn << 8) | (off & 0xfc);
}

/* The aligned dword at `off` of bus 0, device `dev`, function `fn`. */
static inline u32 pci_read32(u32 dev, u32 fn, u32 off)
{
    outl(PCI_CONFIG_ADDRESS, pci_addr(dev, fn, off));
    return inl(PCI_CONFIG_DATA);
}

static inline void pci_write32(u32 dev, u32 fn, u32 off, u32 v)
{
    outl(PCI_CONFIG_ADDRESS, pci_addr(dev, fn, off));
    outl(PCI_CONFIG_DATA, v);
}

static inline u8 pci_read8(u32 dev, u32 fn, u32 off)
{
    return (u8)(pci_read32(dev, fn, off) >> ((off & 3) * 8));
}

/* The first device (function 0) on bus 0 with these IDs, or -1. */
static inline int pci_find(u16 vendor, u16 device)
{
    u32 want = ((u32)device << 16) | vendor;
    for (u32 dev = 0; dev < 32; dev++)
        if (pci_read32(dev, 0, 0) == want)
            return (int)dev;
    return -1;
}

/* Physical address of memory BAR `bar` (64-bit BARs use the next one too), or 0
 * for an I/O BAR. */
static inline u64 pci_bar_addr(u32 dev, u32 bar)
{
    u32 lo = pci_read32(dev, 0, 0x10 + 4 * bar);
    if (lo & 1)
        return 0;
    u64 addr = lo & ~0xfu;
    if (((lo >> 1) & 3) == 2)
        addr |= (u64)pci_read32(dev, 0, 0x14 + 4 * bar) << 32;
    return addr;
}

/* Offset of the first capability (0 when the capability list bit is clear). */
static inline u32 pci_first_cap(u32 dev)
{
    if (!(pci_read32(dev, 0, 0x04) & (1u << 20)))
        return 0;
    return pci_read8(dev, 0, 0x34) & 0xfc;
}

/* Offset of the capability after the one at `cap` (0 at the end). */
static inline u32 pci_next_cap(u32 dev, u32 cap)
{
    return pci_read8(dev, 0, cap + 1) & 0xfc;
}

#endif
