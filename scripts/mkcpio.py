#!/usr/bin/env python3
"""Writes a directory tree as a gzip-compressed newc cpio archive (an initramfs).

Usage: mkcpio.py DIR OUT.cpio.gz
Used instead of cpio(1), which a fresh Debian machine does not have.
"""
import gzip
import os
import stat
import sys


def entries(root):
    yield "."
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            yield os.path.relpath(os.path.join(dirpath, name), root)


def header(ino, st, namesize, filesize, mode):
    fields = [ino, mode, 0, 0, 1, int(st.st_mtime), filesize, 0, 0, 0, 0, namesize, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def pad(n):
    return b"\0" * ((4 - n % 4) % 4)


def main():
    root, out = sys.argv[1], sys.argv[2]
    with gzip.open(out, "wb", compresslevel=6) as f:
        for ino, rel in enumerate(entries(root), start=1):
            path = os.path.join(root, rel)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                data = os.readlink(path).encode()
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as g:
                    data = g.read()
            else:
                data = b""
            name = rel.encode() + b"\0"
            hdr = header(ino, st, len(name), len(data), st.st_mode)
            f.write(hdr + name + pad(len(hdr) + len(name)) + data + pad(len(data)))
        trailer = b"TRAILER!!!\0"
        hdr = header(0, os.stat(root), len(trailer), 0, 0)
        f.write(hdr + trailer + pad(len(hdr) + len(trailer)))


if __name__ == "__main__":
    main()
