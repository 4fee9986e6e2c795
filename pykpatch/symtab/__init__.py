"""Kernel symbol tables (vmlinux, ``.ko``, ``readelf -s`` dumps) and Module.symvers.

The diff engine resolves every symbol a patch references against the symbol
table of the object being patched (``vmlinux`` or a module) and against
``Module.symvers`` (exports).  This module reads both, fast: a vmlinux has
~150k symbols and ~600 MB of other sections, so ``KernelSymbolTable.load``
reads only the ELF header, the section headers, ``.symtab``, its string
table and ``.symtab_shndx`` — never the full ``pykpatch.elf`` model.

Typical use::

    table = KernelSymbolTable.load("vmlinux")        # or a `readelf -s --wide` dump
    for block in table.blocks_named("ksm.c"):         # FILE blocks, in table order
        ...block.symbols...                           # the file's LOCAL symbols
    sym = table.by_name("pages_to_scan_show")[0]
    table.sympos(sym)                                 # klp sympos (see below)

    exports = ModuleSymvers.load("Module.symvers")
    exports.lookup("printk")                          # SymversEntry or None

Modules: ``table`` (the symbols, FILE blocks, sympos), ``elf_input`` (reading
them from an ELF file through ``pykpatch.elf.headers``), ``readelf_input``
(``readelf -s --wide`` dumps), ``symvers`` (Module.symvers).

Every problem with the input (missing file, neither ELF nor a readelf dump,
malformed line N, truncated table) raises ``SymtabError`` with one line that
names the file.
"""

from pykpatch.symtab.symvers import ModuleSymvers, SymversEntry
from pykpatch.symtab.table import FileBlock, KernelSymbolTable, KSym

__all__ = ["FileBlock", "KSym", "KernelSymbolTable", "ModuleSymvers", "SymversEntry"]
