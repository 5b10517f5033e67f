#!/bin/sh
# /init of Hakobune's default busybox initramfs.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
KVER=$(uname -r)
MODS=/lib/modules/$KVER
# Modules have no modules.dep here: load in passes until nothing more loads.
if [ -f "$MODS/load-order" ]; then
    todo=$(cat "$MODS/load-order")
    for pass in 1 2 3 4; do
        left=""
        for m in $todo; do
            insmod "$MODS/$m" 2>/dev/null || left="$left $m"
        done
        [ -z "$left" ] && break
        todo=$left
    done
fi
# devtmpfs creates device nodes asynchronously: wait (up to ~3 s) for the disks'.
for b in /sys/block/vd*; do
    [ -e "$b" ] || continue
    n=0
    while [ ! -e "/dev/${b##*/}" ] && [ $n -lt 30 ]; do sleep 0.1; n=$((n+1)); done
done
# A NIC: bring it up with DHCP (user networking answers at once), unless the
# command line says hako.dhcp=off (a link with no DHCP server, e.g. two VMs wired
# together; the test then sets addresses itself).
ifconfig lo 127.0.0.1 up 2>/dev/null
if [ -e /sys/class/net/eth0 ] && ! grep -q 'hako.dhcp=off' /proc/cmdline; then
    ifconfig eth0 up
    if udhcpc -i eth0 -s /etc/udhcpc.script -q -n -t 4 -T 1 >/dev/null 2>&1; then
        echo "hako-guest: eth0 $(ifconfig eth0 | sed -n 's/.*inet addr:\([0-9.]*\).*/\1/p')"
    else
        echo "hako-guest: eth0 got no DHCP lease"
    fi
fi
echo "hako-guest: init reached (kernel $KVER, $(grep -c ^processor /proc/cpuinfo) cpus)"
# hako.cmd=BASE64 on the kernel command line: run that shell script, print its
# exit status, power off. (Base64 keeps quotes, spaces and '+' intact.)
CMD64=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^hako\.cmd=//p' | head -1)
if [ -n "$CMD64" ]; then
    echo "$CMD64" | base64 -d > /tmp/hako-cmd.sh
    sh /tmp/hako-cmd.sh
    echo "hako-guest: exit status $?"
    sync
    poweroff -f
fi
echo "hako-guest: type 'poweroff -f' to stop (or Ctrl-A x)"
setsid cttyhack sh -l 2>/dev/null || exec sh
poweroff -f
