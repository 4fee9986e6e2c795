#!/bin/bash
# Set up pykpatch and run its main job on the built-in example:
# compile examples/cmdline/cmdline.c as the kernel would (-ffunction-sections
# -fdata-sections, ftrace hooks), apply fix.patch, compile again, and diff the
# two objects into a live-patch object; then show what it contains.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v gcc >/dev/null && command -v patch >/dev/null || {
    echo "demo: needs gcc and patch (apt-get install gcc patch)" >&2; exit 1; }
python3 -m pip install -q -e . 2>/dev/null || python3 -m pip install -q -e .

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CFLAGS="-O2 -c -ffunction-sections -fdata-sections -pg -mfentry -fno-pic -mcmodel=kernel -fno-asynchronous-unwind-tables"
mkdir -p "$work/orig" "$work/patched"
cp examples/cmdline/cmdline.c "$work/orig/"
cp examples/cmdline/cmdline.c "$work/patched/"
(cd "$work/patched" && patch -s -p1 < "$OLDPWD/examples/cmdline/fix.patch")
(cd "$work/orig" && gcc $CFLAGS cmdline.c -o cmdline.o)
(cd "$work/patched" && gcc $CFLAGS cmdline.c -o cmdline.o)

echo "== pykpatch diff (parent symbol table: the original object, standing in for vmlinux)"
pykpatch diff "$work/orig/cmdline.o" "$work/patched/cmdline.o" --parent vmlinux \
    --symtab "$work/orig/cmdline.o" -o "$work/livepatch-cmdline.o" --report "$work/report.json"
echo "== report"
cat "$work/report.json"; echo
echo "== the live-patch object"
pykpatch elf "$work/livepatch-cmdline.o" --sections --symbols
