#!/usr/bin/env bash
# Fetches Debian's stock cloud kernel and busybox-static with apt (no root needed
# for the download itself), caches them under ~/.cache/hako, and builds a busybox
# initramfs whose /init loads the virtio modules, mounts /proc and /sys, brings eth0
# up with DHCP when there is a NIC (unless hako.dhcp=off), and either
# runs the command given on the kernel command line (hako.cmd=...) and powers off,
# or starts a shell on the console.
#
# Usage: scripts/default-guest.sh            # prints the paths of kernel and initramfs
#        scripts/default-guest.sh --print-env # KERNEL=... INITRD=... lines for eval
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${HAKO_CACHE:-$HOME/.cache/hako}/debian"
mkdir -p "$CACHE"
cd "$CACHE"

need_apt_update() { [ -z "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -i debian | head -1)" ]; }

fetch() { # fetch PACKAGE: downloads the .deb into $CACHE unless already there
    local pkg="$1"
    if ! ls "$CACHE"/"${pkg}"_*.deb >/dev/null 2>&1; then
        if need_apt_update; then apt-get update -q >&2 || true; fi
        (cd "$CACHE" && apt-get download "$pkg" >&2) || {
            echo "default-guest: cannot download $pkg with apt-get (run 'apt-get update' first?)" >&2
            exit 1
        }
    fi
    ls "$CACHE"/"${pkg}"_*.deb | head -1
}

# Resolve the metapackage to the versioned kernel package.
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [ -z "$kpkg" ]; then
    if need_apt_update || true; then apt-get update -q >&2 || true; fi
    kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
fi
[ -n "$kpkg" ] || { echo "default-guest: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }

kdeb=$(fetch "$kpkg")
bdeb=$(fetch busybox-static)

KDIR="$CACHE/$kpkg"
if [ ! -d "$KDIR/boot" ]; then
    rm -rf "$KDIR.tmp" && mkdir -p "$KDIR.tmp"
    dpkg-deb -x "$kdeb" "$KDIR.tmp"
    mv "$KDIR.tmp" "$KDIR"
fi
KERNEL=$(ls "$KDIR"/boot/vmlinuz-* | head -1)
KVER=${KERNEL##*/vmlinuz-}

BBDIR="$CACHE/busybox"
if [ ! -x "$BBDIR/bin/busybox" ]; then
    rm -rf "$BBDIR.tmp" && mkdir -p "$BBDIR.tmp"
    dpkg-deb -x "$bdeb" "$BBDIR.tmp"
    mv "$BBDIR.tmp" "$BBDIR"
fi

INITRD="$CACHE/initramfs-$KVER.cpio.gz"
if [ ! -s "$INITRD" ] || [ "$SCRIPT_DIR/default-guest.sh" -nt "$INITRD" ] || [ "$SCRIPT_DIR/guest-init.sh" -nt "$INITRD" ] || [ "$SCRIPT_DIR/udhcpc.script" -nt "$INITRD" ] || [ "$SCRIPT_DIR/mkcpio.py" -nt "$INITRD" ]; then
    ROOT=$(mktemp -d)
    trap 'rm -rf "$ROOT"' EXIT
    mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,tmp,mnt,etc,root,lib/modules/"$KVER"}
    cp "$BBDIR/bin/busybox" "$ROOT/bin/busybox"
    for applet in sh ash; do ln -s busybox "$ROOT/bin/$applet"; done
    cp "$SCRIPT_DIR/guest-init.sh" "$ROOT/init"
    chmod +x "$ROOT/init"
    cp "$SCRIPT_DIR/udhcpc.script" "$ROOT/etc/udhcpc.script"
    chmod +x "$ROOT/etc/udhcpc.script"
    # virtio and filesystem modules the init may load (insmod order matters: deps first).
    MODS="$ROOT/lib/modules/$KVER"
    : > "$MODS/load-order"
    for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_mmio \
             virtio_blk virtio_console virtio-rng failover net_failover virtio_net virtio_balloon \
             vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport; do
        f=$(find "$KDIR/lib/modules/$KVER/kernel" -name "$m.ko*" | head -1)
        if [ -n "$f" ]; then
            cp "$f" "$MODS/"
            echo "$(basename "$f")" >> "$MODS/load-order"
        fi
    done
    python3 "$SCRIPT_DIR/mkcpio.py" "$ROOT" "$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"
fi

if [ "${1:-}" = "--print-env" ]; then
    echo "KERNEL=$KERNEL"
    echo "INITRD=$INITRD"
else
    echo "$KERNEL"
    echo "$INITRD"
fi
