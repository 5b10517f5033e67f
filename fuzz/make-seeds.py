#!/usr/bin/env python3
"""Writes small hand-made VDI, VHD and VMDK seeds (4 KiB blocks, so a seed holds several
blocks in a few KiB) into corpus/vdi_image, corpus/vpc_image and corpus/vmdk_image, VHDX
seeds (one with a log to replay) into corpus/vhdx_image, and OVF descriptors and a
manifest into corpus/ovf_descriptor. The parsers accept
block sizes from 512 bytes; qemu-img's own images (1 MiB / 2 MiB blocks) are added to
the seeds at test time by crates/block/tests/fuzz_corpus.rs when qemu-img is present.
VHDX seeds (corpus/vhdx_image) cannot be that small: regions and blocks sit at 1 MiB
boundaries, so each is about 3 MiB, almost all zeroes, with tiny virtual disks."""
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

def crc32c(b):
    c = 0xffffffff
    for x in b:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ 0x82f63b78 if c & 1 else c >> 1
    return c ^ 0xffffffff

def guid(a, b, c, d):
    return struct.pack("<IHH", a, b, c) + bytes(d)

BAT_G = guid(0x2dc27766, 0xf623, 0x4200, [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08])
META_G = guid(0x8b7ca206, 0x4790, 0x4b9a, [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e])
ITEMS = [
    guid(0xcaa16737, 0xfa36, 0x4d43, [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b]),
    guid(0x2fa54224, 0xcd1b, 0x4876, [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8]),
    guid(0xbeca12ab, 0xb2e6, 0x4523, [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46]),
    guid(0x8141bf1d, 0xa96f, 0x4709, [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f]),
    guid(0xcda348c7, 0x445d, 0x4471, [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56]),
]
MIB = 1 << 20

def vhdx(size, bs, flags, bat, blocks, log=False):
    """bat: entries; blocks: (file offset, bytes). Without a log: BAT region at 1 MiB,
    metadata at 2 MiB; with a 1 MiB log at 1 MiB: BAT at 2 MiB, metadata at 3 MiB."""
    bat_at, meta_at = (2 * MIB, 3 * MIB) if log else (MIB, 2 * MIB)
    end = max([meta_at + 65536 + 4096] + [o + len(d) for o, d in blocks])
    img = bytearray(end)
    img[0:8] = b"vhdxfile"
    for at, seq in ((64 << 10, 1), (128 << 10, 2)):
        struct.pack_into("<4sIQ", img, at, b"head", 0, seq)
        img[at + 16:at + 48] = data(32)
        struct.pack_into("<HHIQ", img, at + 64, 0, 1, MIB if log else 0, MIB if log else 0)
        struct.pack_into("<I", img, at + 4, crc32c(img[at:at + 4096]))
    for at in (192 << 10, 256 << 10):
        struct.pack_into("<4sIII", img, at, b"regi", 0, 2, 0)
        for i, (g, off) in enumerate(((BAT_G, bat_at), (META_G, meta_at))):
            e = at + 16 + 32 * i
            img[e:e + 16] = g
            struct.pack_into("<QII", img, e + 16, off, MIB, 1)
        struct.pack_into("<I", img, at + 4, crc32c(img[at:at + 65536]))
    m = meta_at
    img[m:m + 8] = b"metadata"
    struct.pack_into("<H", img, m + 10, len(ITEMS))
    for i, (g, off, ln) in enumerate(zip(ITEMS, (0, 8, 16, 32, 36), (8, 8, 16, 4, 4))):
        e = m + 32 + 32 * i
        img[e:e + 16] = g
        struct.pack_into("<III", img, e + 16, 65536 + off, ln, 4 if i == 0 else 6)
    v = m + 65536
    struct.pack_into("<IIQ", img, v, bs, flags, size)
    img[v + 16:v + 32] = data(16)
    struct.pack_into("<II", img, v + 32, 512, 4096)
    for i, e in enumerate(bat):
        struct.pack_into("<Q", img, bat_at + 8 * i, e)
    for o, d in blocks:
        img[o:o + len(d)] = d
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
# VHDX: 1 MiB blocks unless noted; entries are offset | state (6 present, 2 zero).
write("vhdx_image", "dynamic", vhdx(2 * MIB + 8192, MIB, 0, [0, 2, 3 * MIB | 6], [(3 * MIB, data(8192))]))
write("vhdx_image", "fixed", vhdx(8192, MIB, 1, [3 * MIB | 6], [(3 * MIB, data(8192))]))
# 256 MiB blocks: chunk ratio 16, entry 16 is a sector bitmap entry, block 16 entry 17.
write("vhdx_image", "bitmap-entry", vhdx(16 * 256 * MIB + 4096, 256 * MIB, 0,
      [2] * 16 + [0, 3 * MIB | 6], [(3 * MIB, data(4096))]))
write("vhdx_image", "empty-log", vhdx(4 * MIB, MIB, 0, [2, 0, 2, 3], [], log=True))

def log_entry(guid, seq, tail, flushed, last, writes):
    """A VHDX log entry (MS-VHDX 2.3.1): writes are ("zero", offset, length) or
    ("data", offset, 4096 bytes)."""
    count = len(writes)
    ds = (count + 2 + 127) // 128
    nd = sum(1 for w in writes if w[0] == "data")
    e = bytearray((ds + nd) * 4096)
    struct.pack_into("<4sIIIQII16sQQ", e, 0, b"loge", 0, len(e), tail, seq, count, 0,
                     guid, flushed, last)
    k = 0
    for i, w in enumerate(writes):
        d = 64 + 32 * i
        if w[0] == "zero":
            struct.pack_into("<4sIQQQ", e, d, b"zero", 0, w[2], w[1], seq)
        else:
            sec = w[2]
            struct.pack_into("<4s4s8sQQ", e, d, b"desc", sec[4092:], sec[:8], w[1], seq)
            s = (ds + k) * 4096
            struct.pack_into("<4sI", e, s, b"data", seq >> 32)
            e[s + 8:s + 4092] = sec[8:4092]
            struct.pack_into("<I", e, s + 4092, seq & 0xffffffff)
            k += 1
    struct.pack_into("<I", e, 4, crc32c(e))
    return bytes(e)

# A dynamic VHDX whose block 0 (data at 4 MiB) only the log maps, in two entries: the
# BAT sector, then a zeroed and a replaced sector of the block.
img = bytearray(vhdx(2 * MIB + 8192, MIB, 0, [0, 0, 0], [(4 * MIB, data(8192))], log=True))
G = bytes(range(1, 17))
bat = bytearray(4096)
struct.pack_into("<QQQ", bat, 0, 4 * MIB | 6, 0, 2)
n = len(img)
e1 = log_entry(G, 5, 0, n, 5 * MIB, [("data", 2 * MIB, bytes(bat))])
e2 = log_entry(G, 6, 0, n, 5 * MIB, [("zero", 4 * MIB, 4096), ("data", 4 * MIB + 4096, data(4096))])
img[MIB:MIB + len(e1)] = e1
img[MIB + len(e1):MIB + len(e1) + len(e2)] = e2
h = 128 << 10
img[h + 48:h + 64] = G
struct.pack_into("<I", img, h + 4, 0)
struct.pack_into("<I", img, h + 4, crc32c(img[h:h + 4096]))
write("vhdx_image", "pending-log", bytes(img))

os.makedirs(os.path.join(here, "corpus", "ovf_descriptor"), exist_ok=True)
write("ovf_descriptor", "vmware.ovf", b"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:href="app-disk1.vmdk" ovf:id="file1" ovf:size="68608"/>
    <File ovf:href="tools.iso" ovf:id="file2"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1"
      ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
    <Disk ovf:capacity="2147483648" ovf:diskId="vmdisk2"/>
  </DiskSection>
  <DeploymentOptionSection>
    <Configuration ovf:id="small"><Label>small</Label></Configuration>
    <Configuration ovf:default="true" ovf:id="large"><Label>large</Label></Configuration>
  </DeploymentOptionSection>
  <VirtualSystem ovf:id="app">
    <Info>A virtual machine</Info>
    <Name>app</Name>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item ovf:configuration="small"><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>1 CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="large"><rasd:ElementName>4 CPUs</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>4096MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>4096</rasd:VirtualQuantity></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>8</rasd:InstanceID>
        <rasd:Parent>4</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:ElementName>Hard Disk 2</rasd:ElementName>
        <rasd:HostResource>/disk/vmdisk2</rasd:HostResource><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:ElementName>CD-ROM</rasd:ElementName><rasd:HostResource>ovf:/file/file2</rasd:HostResource>
        <rasd:ResourceType>15</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
""")
write("ovf_descriptor", "virtualbox-ovf2.ovf", b"""<?xml version="1.0"?>
<Envelope ovf:version="2.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/2"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:sasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData"
  xmlns:vbox="http://www.virtualbox.org/ovf/machine">
  <References><File ovf:id="file1" ovf:href="box-disk001.vmdk"/></References>
  <DiskSection><Info>List of the virtual disks</Info>
    <Disk ovf:capacity="10737418240" ovf:diskId="vmdisk1" ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="box">
    <Info>A virtual machine</Info>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:Caption>2 virtual CPU</rasd:Caption><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>
      <StorageItem><sasd:HostResource>/disk/vmdisk1</sasd:HostResource>
        <sasd:InstanceID>9</sasd:InstanceID><sasd:ResourceType>17</sasd:ResourceType></StorageItem>
    </VirtualHardwareSection>
    <vbox:Machine ovf:required="false" version="1.16-linux"><Hardware>
      <Firmware type="EFI"/></Hardware></vbox:Machine>
  </VirtualSystem>
</Envelope>
""")
write("ovf_descriptor", "manifest.mf", (
    "SHA256(app.ovf)= " + "ab" * 32 + "\n"
    "SHA1(app-disk1.vmdk)= " + "cd" * 20 + "\n"
    "SHA512 (tools.iso) = " + "ef" * 64 + "\n").encode())
