"""pykpatch: build Linux livepatch modules from kernel source patches.

Package layout (one module per job):

- ``pykpatch.elf``     ELF relocatable object model: read, edit, write.
- ``pykpatch.symtab``  kernel symbol tables (vmlinux, .ko, readelf dumps) and Module.symvers.
- ``pykpatch.errors``  typed exceptions; the CLI maps them to exit codes.
- ``pykpatch.cli``     the ``pykpatch`` command and its subcommands.
"""

__version__ = "0.1.0"
