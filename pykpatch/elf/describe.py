"""Human-readable descriptions of model elements (kept apart from parsing).

Used by ``pykpatch elf`` and by error messages of the later stages.
"""

from __future__ import annotations

from collections.abc import Iterator

from pykpatch.arch import generic_arch
from pykpatch.elf.constants import EM, ET, SHF, SHN, SHT, STB, STT, STV
from pykpatch.elf.model import ElfObject, GroupSection, RelocationSection, Section, Symbol

_FLAG_LETTERS = (
    (SHF.WRITE, "W"), (SHF.ALLOC, "A"), (SHF.EXECINSTR, "X"), (SHF.MERGE, "M"),
    (SHF.STRINGS, "S"), (SHF.INFO_LINK, "I"), (SHF.LINK_ORDER, "L"),
    (SHF.OS_NONCONFORMING, "O"), (SHF.GROUP, "G"), (SHF.TLS, "T"),
    (SHF.COMPRESSED, "C"), (SHF.RELA_LIVEPATCH, "K"), (SHF.GNU_RETAIN, "R"), (SHF.EXCLUDE, "E"),
)


def _enum_name(enum, value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return f"{value:#x}"


def describe_section_type(value: int) -> str:
    return _enum_name(SHT, value)


def describe_flags(flags: int) -> str:
    return "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit) or "-"


# Names of the special st_shndx values (keyed by int: a symbol's shndx is a plain int).
_SPECIAL_SHNDX: dict[int, str] = {SHN.UNDEF: "UND", SHN.ABS: "ABS", SHN.COMMON: "COM", SHN.LIVEPATCH: "LIVEPATCH"}


def describe_shndx(sym: Symbol) -> str:
    if sym.section is not None:
        return sym.section.name
    return _SPECIAL_SHNDX.get(sym.shndx, f"{sym.shndx:#x}")


def describe_header(obj: ElfObject) -> str:
    bits = 64 if obj.layout.is64 else 32
    order = "LSB" if obj.layout.endian == "little" else "MSB"
    return (
        f"{obj.path}: ELF{bits} {order} {_enum_name(ET, obj.e_type)} machine={_enum_name(EM, obj.machine)} "
        f"sections={len(obj.sections)} symbols={len(obj.symbols)}"
    )


def section_lines(obj: ElfObject) -> Iterator[str]:
    yield f"{'idx':>5} {'name':<40} {'type':<12} {'flags':<6} {'size':>8} {'align':>5}  link/info"
    for sec in obj.sections:
        extra = ""
        if sec.link is not None:
            extra += f"link={sec.link.name}"
        if isinstance(sec.info, Section):
            extra += f" info={sec.info.name}"
        if isinstance(sec, GroupSection):
            sig = sec.signature.name if sec.signature else "?"
            extra += f" signature={sig} members={len(sec.members)}"
        yield (
            f"{sec.index:>5} {sec.name:<40} {describe_section_type(sec.type):<12} "
            f"{describe_flags(sec.flags):<6} {sec.size:>#8x} {sec.align:>5}  {extra.strip()}"
        )


def symbol_lines(obj: ElfObject) -> Iterator[str]:
    yield f"{'idx':>6} {'value':>16} {'size':>6} {'type':<8} {'bind':<7} {'vis':<9} {'section':<32} name"
    for sym in obj.symbols:
        yield (
            f"{sym.index:>6} {sym.value:016x} {sym.size:>6} {_enum_name(STT, sym.type):<8} "
            f"{_enum_name(STB, sym.bind):<7} {_enum_name(STV, sym.visibility):<9} "
            f"{describe_shndx(sym):<32} {obj.symbol_name(sym)}"
        )


def relocation_lines(obj: ElfObject) -> Iterator[str]:
    arch = generic_arch(obj.machine)
    for sec in obj.relocation_sections():
        target = sec.info.name if isinstance(sec.info, Section) else "-"
        if sec.relocations is None:
            yield f"{sec.name} -> {target}: not decoded"
            continue
        yield f"{sec.name} -> {target}: {len(sec.relocations)} relocation(s)"
        for rel in sec.relocations:
            yield f"  {rel.offset:08x} {arch.reloc_name(rel.type):<24} {describe_relocation_target(obj, rel)}"


def describe_relocation_target(obj: ElfObject, rel) -> str:
    if rel.symbol is None:
        return f"{rel.addend:+#x}"
    return f"{obj.symbol_name(rel.symbol)}{rel.addend:+#x}"


def describe_relocation_section(sec: RelocationSection) -> str:
    return f"{sec.name} ({len(sec.relocations or [])} relocations)"
