"""What a live patch module file says about itself, read from the .ko (no kernel needed).

``.modinfo`` gives the release it was built for (``vermagic``), whether it
is a live patch (``livepatch=Y``, added by modpost for CONFIG_LIVEPATCH
modules) and the name the kernel will know it by (``name=``); a module
built by pykpatch also lists the functions it replaces (``.pykpatch.funcs``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pykpatch.elf.model import Relocation
from pykpatch.elf.reader import read_elf
from pykpatch.records import (
    FUNC_NAME,
    FUNC_OBJNAME,
    FUNC_RECORD,
    FUNCS_SECTION,
    KLP_RELA_PREFIX,
    KLP_SYM_PREFIX,
    FuncRecord,
)


@dataclass
class ModuleInfo:
    path: Path
    name: str
    modinfo: dict[str, str] = field(default_factory=dict)
    functions: list[tuple[str, str, int]] = field(default_factory=list)  # (objname, name, sympos)
    klp_symbols: list[str] = field(default_factory=list)
    klp_sections: list[str] = field(default_factory=list)

    @property
    def kernel_name(self) -> str:
        """The name the kernel gives the module (sysfs, lsmod): ``.modinfo``'s
        ``name=`` when present, since a renamed file keeps its module name."""
        return module_name(self.modinfo.get("name") or self.name)

    @property
    def release(self) -> str:
        """The kernel release the module was built for (first word of vermagic), "" if unknown."""
        words = self.modinfo.get("vermagic", "").split()
        return words[0] if words else ""

    @property
    def is_livepatch(self) -> bool:
        return self.modinfo.get("livepatch") == "Y"


def module_name(path_or_name: str) -> str:
    """``/x/livepatch-fix.ko`` or ``livepatch-fix`` -> ``livepatch_fix`` (the kernel's spelling)."""
    base = os.path.basename(path_or_name)
    if base.endswith(".ko"):
        base = base[:-3]
    return base.replace("-", "_")


def _modinfo(obj) -> dict[str, str]:
    sec = next((s for s in obj.sections if s.name == ".modinfo"), None)
    out: dict[str, str] = {}
    if sec is None:
        return out
    for item in bytes(sec.data).split(b"\0"):
        if b"=" in item:
            key, _, value = item.decode("latin-1").partition("=")
            out.setdefault(key, value)
    return out


def _string(rel: Relocation | None) -> str | None:
    """The string a record's relocation points at, or None when the record is damaged."""
    if rel is None or rel.symbol is None or rel.symbol.section is None:
        return None
    try:
        return rel.symbol.section.string_at(rel.symbol.value + rel.addend)
    except IndexError:
        return None


def module_info(path: Path) -> ModuleInfo:
    """What a livepatch module built by pykpatch patches (read from the .ko, no kernel needed)."""
    obj = read_elf(path)
    info = ModuleInfo(path, module_name(str(path)), _modinfo(obj))
    funcs = next((s for s in obj.sections if s.name == FUNCS_SECTION), None)
    if funcs is not None and funcs.rela is not None:
        rels = {r.offset: r for r in funcs.rela.relocations or ()}
        for base in range(0, funcs.size - FUNC_RECORD + 1, FUNC_RECORD):
            name = _string(rels.get(base + FUNC_NAME))
            objname = _string(rels.get(base + FUNC_OBJNAME))
            if name is None or objname is None:
                continue
            info.functions.append((objname, name, FuncRecord.decode(funcs.data, base, obj.layout.endian).sympos))
    info.klp_symbols = [s.name for s in obj.symbols if s.name.startswith(KLP_SYM_PREFIX)]
    info.klp_sections = [s.name for s in obj.sections if s.name.startswith(KLP_RELA_PREFIX)]
    return info
