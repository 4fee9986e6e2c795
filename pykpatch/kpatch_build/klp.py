"""Post-link conversion of a built module into the kernel's livepatch ELF format.

Documentation/livepatch/module-elf-format.rst: references the module loader
cannot resolve (statics, unexported symbols, symbols of modules that may
load later) are kept in ``.klp.rela.OBJNAME.SECNAME`` relocation sections
flagged ``SHF_RELA_LIVEPATCH``, against ``.klp.sym.OBJNAME.SYMNAME,SYMPOS``
symbols with ``st_shndx = SHN_LIVEPATCH``; the livepatch core resolves and
applies them when OBJNAME is present.  The linker would not keep such
sections and symbols, so the diff describes them in ``.pykpatch.relocs``
(format: ``pykpatch.records``) and this step, run on the linked ``.ko``,
turns the description into the real thing and drops it.
"""

from __future__ import annotations

from pykpatch.elf.constants import SHF, SHN, STB, STT
from pykpatch.elf.model import ElfObject, Relocation, RelocationSection, Symbol
from pykpatch.errors import KlpConversionError
from pykpatch.records import (
    KLP_PLACEHOLDER,
    KLP_RELA_PREFIX,
    KLP_SYM_PREFIX,
    RELOC_DEST,
    RELOC_NAME,
    RELOC_OBJNAME,
    RELOC_RECORD,
    RELOCS_SECTION,
    KlpReloc,
    RelocRecord,
    klp_rela_name,
    klp_symbol_name,
)

# Kernel limit on object and symbol names in klp names (KSYM_NAME_LEN and MODULE_NAME_LEN).
KSYM_NAME_LEN = 512


def _string(obj: ElfObject, rel: Relocation | None, what: str) -> str:
    if rel is None or rel.symbol is None or rel.symbol.section is None:
        raise KlpConversionError(f"{obj.path}: {what} has no string relocation")
    try:
        return rel.symbol.section.string_at(rel.symbol.value + rel.addend)
    except IndexError as err:
        raise KlpConversionError(f"{obj.path}: {what}: {err}") from None


def read_klp_relocations(obj: ElfObject) -> list[KlpReloc]:
    """Decode ``.pykpatch.relocs`` of a linked module (empty list if there is none)."""
    sec = next((s for s in obj.sections if s.name == RELOCS_SECTION), None)
    if sec is None:
        return []
    if sec.size % RELOC_RECORD:
        raise KlpConversionError(f"{obj.path}: {RELOCS_SECTION} size {sec.size:#x} is not a multiple of {RELOC_RECORD}")
    by_offset = {r.offset: r for r in (sec.rela.relocations or [])} if sec.rela is not None else {}
    endian = obj.layout.endian
    out = []
    for base in range(0, sec.size, RELOC_RECORD):
        number = base // RELOC_RECORD
        record = RelocRecord.decode(sec.data, base, endian)
        dest = by_offset.get(base + RELOC_DEST)
        if dest is None or dest.symbol is None or dest.symbol.section is None:
            raise KlpConversionError(f"{obj.path}: livepatch relocation {number} has no destination")
        out.append(KlpReloc(
            section=dest.symbol.section,
            offset=dest.symbol.value + dest.addend,
            type=record.type,
            addend=record.addend,
            name=_string(obj, by_offset.get(base + RELOC_NAME), f"livepatch relocation {number} name"),
            objname=_string(obj, by_offset.get(base + RELOC_OBJNAME), f"livepatch relocation {number} object"),
            sympos=record.sympos,
            external=record.external,
            sym_type=record.sym_type,
            sym_bind=record.sym_bind,
        ))
    return out


def drop_placeholders(obj: ElfObject, expected: int) -> None:
    """Remove the placeholder relocations (``records.KLP_PLACEHOLDER``): one per livepatch relocation."""
    dropped = 0
    for relsec in obj.relocation_sections():
        if relsec.relocations is None:
            continue
        kept = [r for r in relsec.relocations if r.symbol is None or r.symbol.name != KLP_PLACEHOLDER]
        dropped += len(relsec.relocations) - len(kept)
        relsec.relocations = kept
    if dropped != expected:
        raise KlpConversionError(f"{obj.path}: {dropped} placeholder relocation(s) for {expected} livepatch "
                                 "relocation(s)")


def convert_to_klp(obj: ElfObject) -> int:
    """Rewrite ``obj`` (a linked livepatch module) in place; return the number of klp relocations."""
    relocs = read_klp_relocations(obj)
    drop_placeholders(obj, len(relocs))
    symbols: dict[str, Symbol] = {}
    sections: dict[str, RelocationSection] = {}
    for k in relocs:
        if len(k.name) >= KSYM_NAME_LEN:
            raise KlpConversionError(f"{obj.path}: symbol name too long for livepatch: {k.name[:60]}...")
        sym_name = klp_symbol_name(k.objname, k.name, k.sympos)
        sym = symbols.get(sym_name)
        if sym is None:
            bind = k.sym_bind if k.sym_bind in (STB.LOCAL, STB.GLOBAL, STB.WEAK) else STB.GLOBAL
            sym = Symbol(sym_name, bind, k.sym_type or STT.NOTYPE, None, 0, 0, 0, SHN.LIVEPATCH)
            obj.add_symbol(sym)
            symbols[sym_name] = sym
        sec_name = klp_rela_name(k.objname, k.section.name)
        relsec = sections.get(sec_name)
        if relsec is None:
            relsec = RelocationSection(
                sec_name, target=k.section, rela=True,
                flags=SHF.RELA_LIVEPATCH | SHF.INFO_LINK | SHF.ALLOC,
                align=8, entsize=obj.layout.rela.size, link=obj.symtab,
            )
            obj.add_section(relsec)
            sections[sec_name] = relsec
        assert relsec.relocations is not None  # made here, with a list
        relsec.relocations.append(Relocation(k.offset, k.type, sym, k.addend))
    drop = [s for s in obj.sections if s.name in (RELOCS_SECTION, ".rela" + RELOCS_SECTION)]
    obj.remove_sections(drop)
    return len(relocs)


def klp_summary(obj: ElfObject) -> tuple[list[str], list[str]]:
    """Names of the .klp.rela sections and .klp.sym symbols (for tests and `pykpatch elf`)."""
    secs = [s.name for s in obj.sections if s.name.startswith(KLP_RELA_PREFIX)]
    syms = [s.name for s in obj.symbols if s.name.startswith(KLP_SYM_PREFIX)]
    return secs, syms
