"""pykpatch: build Linux livepatch modules from kernel source patches.

Package layout (one module per job):

- ``pykpatch.elf``     ELF relocatable object model: read, edit, write; arch tables; x86 decoder.
- ``pykpatch.symtab``  kernel symbol tables (vmlinux, .ko, readelf dumps) and Module.symvers.
- ``pykpatch.diff``    the diff engine (create-diff-object), stage by stage.
- ``pykpatch.kpatch_build.klp``     post-link conversion to the kernel's livepatch ELF format.
- ``pykpatch.kpatch_build.kmod``  livepatch module generation with the kernel's kbuild.
- ``pykpatch.kpatch_build``   kpatch-build: patches, in-tree builds with a cache, the pipeline.
- ``pykpatch.lab``     a real kernel built and booted under QEMU, for tests and trials.
- ``pykpatch.errors``  typed exceptions; the CLI maps them to exit codes.
- ``pykpatch.cli``     the ``pykpatch`` command and its subcommands.
"""

__version__ = "0.1.0"
