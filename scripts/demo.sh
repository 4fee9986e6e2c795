#!/bin/bash
# The main job on the built-in example, from a fresh Debian 12 machine:
#   1. install what is needed (apt + pip), build the lab's tiny Debian 6.1 kernel (cached),
#   2. kpatch-build examples/cmdline-fix.patch against it (a /proc/cmdline change),
#   3. boot the kernel under QEMU, load the live patch, show /proc/cmdline change and come back.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && ! dpkg-query -W qemu-system-x86 linux-source-6.1 busybox-static >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends build-essential bc bison flex libelf-dev libssl-dev \
        cpio xz-utils patch qemu-system-x86 busybox-static linux-source-6.1
fi
python3 -m pip install -q -e . 2>/dev/null || python3 -m pip install -q -e .

echo "== 1. the lab kernel (built once, then cached)"
pykpatch lab build
info=$(python3 -c 'from pykpatch import lab; k = lab.ensure_kernel(); print(k.tree); print(k.vmlinux); print(k.bzimage)')
tree=$(sed -n 1p <<<"$info"); vmlinux=$(sed -n 2p <<<"$info"); bzimage=$(sed -n 3p <<<"$info")

echo "== 2. kpatch-build"
out=$(mktemp -d)
kpatch-build -s "$tree" -v "$vmlinux" -n cmdline-fix -o "$out" examples/cmdline-fix.patch
kpatch info "$out/livepatch-cmdline-fix.ko"

echo "== 3. load it into the running (QEMU) kernel and take it out again"
lp=/sys/kernel/livepatch/livepatch_cmdline_fix
pykpatch lab boot --kernel "$bzimage" --module "$out/livepatch-cmdline-fix.ko" \
    --step 'cat /proc/cmdline' \
    --step 'insmod /modules/livepatch-cmdline-fix.ko' \
    --step "while [ \"\$(cat $lp/transition)\" != 0 ]; do sleep 0.1; done; echo transition complete" \
    --step 'cat /proc/cmdline' \
    --step "echo 0 > $lp/enabled; while [ -e $lp ]; do sleep 0.1; done; rmmod livepatch_cmdline_fix; echo unloaded" \
    --step 'cat /proc/cmdline'
rm -rf "$out"
