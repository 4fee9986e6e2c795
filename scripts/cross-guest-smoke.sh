#!/bin/bash
# Manual smoke test of a cross-built live patch in a ppc64le or s390x 6.1 guest (not run by CI yet:
# each tiny kernel takes 13-25 minutes to build on 2 cores, see README "Architectures").
#
#   bash scripts/cross-guest-smoke.sh ppc64le|s390x WORKDIR
#
# 1. unpacks linux-source-6.1 into WORKDIR, configures tinyconfig + pykpatch/lab/data/livepatch-tiny-ARCH.config
#    with Debian's cross compiler, builds vmlinux and modules (skipped when WORKDIR/built exists);
# 2. kpatch-build --arch ARCH examples/cmdline-fix.patch on that tree;
# 3. boots the kernel under QEMU (TCG) with a busybox initramfs (busybox-static of that arch, fetched with
#    apt-get download) that loads the patch, reads /proc/cmdline, disables and removes it.
# Needs: gcc-ARCH-linux-gnu, qemu-system-ppc / qemu-system-s390x, linux-source-6.1,
#        dpkg --add-architecture ppc64el|s390x (for the busybox download only).
set -euo pipefail
ARCH=$1 WORK=$(realpath -m "$2")
REPO=$(cd "$(dirname "$0")/.." && pwd)
case $ARCH in
  ppc64le) KARCH=powerpc CROSS=powerpc64le-linux-gnu- DEB=ppc64el IMAGE=vmlinux
           QEMU=(qemu-system-ppc64 -M pseries -cpu power9) CONSOLE=hvc0 ;;
  s390x)   KARCH=s390 CROSS=s390x-linux-gnu- DEB=s390x IMAGE=arch/s390/boot/bzImage
           QEMU=(qemu-system-s390x -M s390-ccw-virtio -cpu max) CONSOLE=ttysclp0 ;;
  *) echo "usage: $0 ppc64le|s390x WORKDIR" >&2; exit 2 ;;
esac
SRC=$WORK/linux-source-6.1
mkdir -p "$WORK"
if [ ! -e "$WORK/built" ]; then
  [ -d "$SRC" ] || tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$WORK"
  make -C "$SRC" ARCH=$KARCH CROSS_COMPILE=$CROSS tinyconfig >/dev/null
  cat "$REPO/pykpatch/lab/data/livepatch-tiny-$ARCH.config" >> "$SRC/.config"
  make -C "$SRC" ARCH=$KARCH CROSS_COMPILE=$CROSS olddefconfig >/dev/null
  time make -C "$SRC" -j"$(nproc)" ARCH=$KARCH CROSS_COMPILE=$CROSS vmlinux modules $( [ $ARCH = s390x ] && echo bzImage ) \
      > "$WORK/build.log" 2>&1
  touch "$WORK/built"
fi
mkdir -p "$WORK/out"
time CACHEDIR=$WORK/kcache PYTHONPATH=$REPO python3 -m pykpatch.cli build --arch "$ARCH" -s "$SRC" -o "$WORK/out" \
    "$REPO/examples/cmdline-fix.patch" </dev/null
rm -rf "$WORK/initramfs" && mkdir -p "$WORK/initramfs"/{bin,proc,sys,dev,modules}
(cd "$WORK" && apt-get download -qq "busybox-static:$DEB" && dpkg-deb -x busybox-static_*_"$DEB".deb bb)
cp "$WORK/bb/bin/busybox" "$WORK/initramfs/bin/"
cp "$WORK/out/livepatch-cmdline-fix.ko" "$WORK/initramfs/modules/"
cat > "$WORK/initramfs/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
lp=/sys/kernel/livepatch/livepatch_cmdline_fix
wait_transition() { i=0; while [ "$(cat $lp/transition 2>/dev/null)" = 1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; }
echo "STEP before: $(cat /proc/cmdline)"
insmod /modules/livepatch-cmdline-fix.ko; echo "STEP insmod rc=$?"; wait_transition
echo "STEP enabled=$(cat $lp/enabled) after: $(cat /proc/cmdline)"
echo 0 > $lp/enabled; wait_transition
rmmod livepatch_cmdline_fix; echo "STEP rmmod rc=$?"
echo "STEP unpatched: $(cat /proc/cmdline)"
poweroff -f
INIT
chmod +x "$WORK/initramfs/init"
(cd "$WORK/initramfs" && find . | cpio -o -H newc 2>/dev/null | gzip > "$WORK/initramfs.cpio.gz")
time timeout 300 "${QEMU[@]}" -m 512M -nographic -nodefaults -serial mon:stdio -no-reboot \
    -kernel "$SRC/$IMAGE" -initrd "$WORK/initramfs.cpio.gz" -append "console=$CONSOLE" </dev/null | tee "$WORK/boot.log"
grep -q "pykpatch=cmdline" "$WORK/boot.log" && ! grep -qiE "oops|call trace|WARNING:" "$WORK/boot.log"
