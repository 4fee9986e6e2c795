"""The livepatch records pykpatch's diff writes, its module links, and ``kpatch info`` reads: one definition.

Three sections describe a live patch inside a diff output, and survive
kbuild's link into the module because every field that names a place is an
ordinary relocation (``ld -r`` moves sections; relocations follow).  Every
integer is in the object's byte order.

``.pykpatch.strings``  NUL-terminated names referenced below (ALLOC).

``.pykpatch.funcs``    (ALLOC) one ``FuncRecord`` per replaced function, read by
the module's init code (``data/livepatch-glue.c``, ``struct pykpatch_func``,
whose size the C code asserts)::

    u64 new_func   relocation -> the replacement function
    u64 name       relocation -> .pykpatch.strings (the kernel's name)
    u64 objname    relocation -> .pykpatch.strings ("vmlinux" or the module)
    u64 sympos     0 (unique/global) or the 1-based position among same-named locals

``.pykpatch.relocs``   one ``RelocRecord`` per livepatch relocation (a reference
the module loader cannot resolve: a static, an unexported global, a symbol
of a module that may load later), turned into ``.klp.rela.OBJ.SEC`` /
``.klp.sym.OBJ.NAME,POS`` after the link (``kpatch_build/klp.py``)::

    u64 dest       relocation -> section symbol + offset where the value goes
    u64 name       relocation -> .pykpatch.strings (symbol name)
    u64 objname    relocation -> .pykpatch.strings (object that defines it)
    u64 sympos     as above
    i64 addend
    u32 type       the architecture's relocation type
    u32 flags      bit 0: exported by a module; bits 8-15: the symbol's STT type;
                   bits 16-23: its STB binding

Callback records of the patch-author header (``.kpatch.callbacks.*``,
``struct pykpatch_callback``): ``u64 fn, u64 objname``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pykpatch.elf.model import Section

FUNCS_SECTION = ".pykpatch.funcs"
RELOCS_SECTION = ".pykpatch.relocs"
STRINGS_SECTION = ".pykpatch.strings"
OUR_SECTIONS = frozenset({FUNCS_SECTION, RELOCS_SECTION, STRINGS_SECTION})
KLP_RELA_PREFIX = ".klp.rela."
KLP_SYM_PREFIX = ".klp.sym."
CALLBACK_PREFIX = ".kpatch.callbacks."
FLAG_EXTERNAL = 1
# Until the klp conversion, a livepatch relocation's place keeps an ordinary relocation against this
# function of the glue: objtool, which kbuild runs on the whole module when the kernel delays it
# (IBT, clang LTO), must see every call's target, or it stops with "unannotated intra-function call"
# and writes none of the module's .return_sites (Linux 6.12 then WARNs at load).  The conversion
# removes these relocations (the module loader must never apply them).
KLP_PLACEHOLDER = "__pykpatch_klp_placeholder"

# Field offsets that hold relocations (the rest are plain values).
FUNC_NEW, FUNC_NAME, FUNC_OBJNAME, FUNC_SYMPOS = 0, 8, 16, 24
RELOC_DEST, RELOC_NAME, RELOC_OBJNAME = 0, 8, 16
CALLBACK_FN, CALLBACK_OBJNAME = 0, 8

_FUNC = "QQQQ"
_RELOC = "QQQQqII"
_CALLBACK = "QQ"


def _layout(fmt: str, endian: str) -> struct.Struct:
    return struct.Struct(("<" if endian == "little" else ">") + fmt)


FUNC_RECORD = struct.calcsize("<" + _FUNC)          # 32
RELOC_RECORD = struct.calcsize("<" + _RELOC)        # 48
CALLBACK_RECORD = struct.calcsize("<" + _CALLBACK)  # 16


@dataclass(frozen=True)
class FuncRecord:
    """The plain value of a ``.pykpatch.funcs`` record (its pointers are relocations)."""

    sympos: int

    def encode(self, endian: str) -> bytes:
        return _layout(_FUNC, endian).pack(0, 0, 0, self.sympos)

    @classmethod
    def decode(cls, data: bytes, offset: int, endian: str) -> FuncRecord:
        return cls(_layout(_FUNC, endian).unpack_from(data, offset)[3])


@dataclass(frozen=True)
class RelocRecord:
    """The plain values of a ``.pykpatch.relocs`` record (dest, name, objname are relocations)."""

    sympos: int
    addend: int
    type: int
    external: bool
    sym_type: int
    sym_bind: int

    @property
    def flags(self) -> int:
        return (FLAG_EXTERNAL if self.external else 0) | (self.sym_type & 0xFF) << 8 | (self.sym_bind & 0xFF) << 16

    def encode(self, endian: str) -> bytes:
        return _layout(_RELOC, endian).pack(0, 0, 0, self.sympos, self.addend, self.type, self.flags)

    @classmethod
    def decode(cls, data: bytes, offset: int, endian: str) -> RelocRecord:
        _, _, _, sympos, addend, rtype, flags = _layout(_RELOC, endian).unpack_from(data, offset)
        return cls(sympos, addend, rtype, bool(flags & FLAG_EXTERNAL), (flags >> 8) & 0xFF, (flags >> 16) & 0xFF)


@dataclass
class KlpReloc:
    """One livepatch relocation: where it applies, what it resolves to.  The diff plans them (output.py),
    the post-link conversion reads them back from a linked module (kpatch_build/klp.py)."""

    section: Section
    offset: int
    type: int
    addend: int
    name: str
    objname: str
    sympos: int
    external: bool
    sym_type: int
    sym_bind: int

    @property
    def record(self) -> RelocRecord:
        return RelocRecord(self.sympos, self.addend, self.type, self.external, self.sym_type, self.sym_bind)


def klp_symbol_name(objname: str, name: str, sympos: int) -> str:
    """Documentation/livepatch/module-elf-format.rst: ``.klp.sym.OBJNAME.SYMNAME,SYMPOS``."""
    return f"{KLP_SYM_PREFIX}{objname}.{name},{sympos}"


def klp_rela_name(objname: str, section: str) -> str:
    return f"{KLP_RELA_PREFIX}{objname}.{section}"
