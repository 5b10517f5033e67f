#!/usr/bin/env python3
"""Writes small hand-made VDI, VHD and VMDK seeds (4 KiB blocks, so a seed holds several
blocks in a few KiB) into corpus/vdi_image, corpus/vpc_image and corpus/vmdk_image. The parsers accept
block sizes from 512 bytes; qemu-img's own images (1 MiB / 2 MiB blocks) are added to
the seeds at test time by crates/block/tests/fuzz_corpus.rs when qemu-img is present."""
import os, random, struct, zlib

here = os.path.dirname(os.path.abspath(__file__))
rnd = random.Random(1234)

def data(n):
    return bytes(rnd.getrandbits(8) for _ in range(n))

def vdi(kind, bmap, allocated, bs=4096, size=None):
    blocks = len(bmap)
    size = blocks * bs if size is None else size
    h = bytearray(0x200)
    h[0:40] = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
    struct.pack_into("<IIII", h, 0x40, 0xbeda107f, 0x00010001, 0x190, kind)
    struct.pack_into("<II", h, 0x154, 0x200, 0x400)
    struct.pack_into("<I", h, 0x168, 512)
    struct.pack_into("<QIIII", h, 0x170, size, bs, 0, blocks, allocated)
    h[0x188:0x198] = data(16)
    t = bytearray(0x200)
    for i, e in enumerate(bmap):
        struct.pack_into("<I", t, 4 * i, e)
    return bytes(h) + bytes(t) + data(allocated * bs)

def checksum(b, skip):
    return (~sum(x for i, x in enumerate(b) if not skip <= i < skip + 4)) & 0xffffffff

def footer(kind, size, dyn_off):
    f = bytearray(512)
    f[0:8] = b"conectix"
    struct.pack_into(">IIQI", f, 8, 2, 0x00010000, dyn_off, 0)
    f[28:32] = b"qem2"
    struct.pack_into(">IIQQ", f, 32, 0x00050003, 0x5769326b, size, size)
    struct.pack_into(">HBBI", f, 56, 1, 16, 63, kind)
    f[68:84] = data(16)
    struct.pack_into(">I", f, 64, checksum(f, 64))
    return bytes(f)

def vhd_dynamic(bat, bs=4096):
    size = len(bat) * bs
    foot = footer(3, size, 512)
    d = bytearray(1024)
    d[0:8] = b"cxsparse"
    struct.pack_into(">QQIII", d, 8, 0xffffffffffffffff, 1536, 0x00010000, len(bat), bs)
    struct.pack_into(">I", d, 36, checksum(d, 36))
    t = bytearray(512 * ((4 * len(bat) + 511) // 512))
    for i, e in enumerate(bat):
        struct.pack_into(">I", t, 4 * i, e)
    img = bytearray(foot + bytes(d) + bytes(t))
    nalloc = sum(1 for e in bat if e != 0xffffffff)
    for k in range(nalloc):
        bitmap = bytearray(512)
        bitmap[0] = [0xff, 0xf0, 0x5a][k % 3]
        img += bitmap + data(bs)
    return bytes(img) + foot

def vmdk(grains, stream, gd_at_end=True):
    """grains: list of None or a byte value; 4 KiB grains, 512 tables entries."""
    cap = len(grains) * 8
    flags = (3 | (3 << 16)) if stream else 3
    def header(gd):
        h = bytearray(512)
        struct.pack_into("<4sIIQQQQI", h, 0, b"KDMV", 3 if stream else 1, flags, cap, 8, 1, 1, 512)
        struct.pack_into("<Q", h, 56, gd)
        h[73:77] = b"\n \r\n"
        h[77] = 1 if stream else 0
        return bytes(h)
    kind = "streamOptimized" if stream else "monolithicSparse"
    desc = ('# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n'
            'createType="%s"\nRW %d SPARSE "x.vmdk"\n' % (kind, cap)).encode().ljust(512, b"\0")
    up_front = not stream or not gd_at_end
    img = bytearray(header(2 if up_front else 0xffffffffffffffff) + desc)
    gt = bytearray(2048)
    if up_front:
        img += bytes(512) + bytes(2048)
    for i, g in enumerate(grains):
        if g is None:
            continue
        struct.pack_into("<I", gt, 4 * i, len(img) // 512)
        d = bytes([g]) * 2048 + data(2048)
        if stream:
            z = zlib.compress(d)
            img += struct.pack("<QI", i * 8, len(z)) + z
            img += bytes(-len(img) % 512)
        else:
            img += d
    if up_front:
        struct.pack_into("<I", img, 1024, 3)
        img[1536:1536 + 2048] = gt
        if stream:
            img += bytes(512)
    else:
        img += struct.pack("<QII", 4, 0, 1).ljust(512, b"\0")
        gt_sector = len(img) // 512
        img += gt
        img += struct.pack("<QII", 1, 0, 2).ljust(512, b"\0")
        gd_sector = len(img) // 512
        img += struct.pack("<I", gt_sector).ljust(512, b"\0")
        img += struct.pack("<QII", 1, 0, 3).ljust(512, b"\0")
        img += header(gd_sector) + bytes(512)
    return bytes(img)

def write(sub, name, b):
    with open(os.path.join(here, "corpus", sub, name), "wb") as f:
        f.write(b)

U, D = 0xffffffff, 0xfffffffe
write("vdi_image", "dynamic-4k", vdi(1, [0, U, U, 1, D, U, 2, U], 3))
write("vdi_image", "fixed-4k", vdi(2, [0, 1, 2, 3], 4))
write("vdi_image", "odd-size", vdi(1, [U, 0], 1, size=5000))
write("vdi_image", "empty", vdi(1, [U] * 16, 0))
# Blocks start after footer copy (512) + header (1024) + table (512): sector 4.
write("vpc_image", "dynamic-4k", vhd_dynamic([4, U, 4 + 9, U, 4 + 18]))
write("vpc_image", "empty", vhd_dynamic([U] * 8))
write("vpc_image", "fixed", data(8192) + footer(2, 8192, 0xffffffffffffffff))
write("vmdk_image", "sparse-4k", vmdk([1, None, 2, None, 3], False))
write("vmdk_image", "stream-footer-4k", vmdk([1, None, 2, 0, None, 3], True))
write("vmdk_image", "stream-upfront-4k", vmdk([None, 5, 6], True, gd_at_end=False))
