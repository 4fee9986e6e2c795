"""What a live patch module file says about itself, read from the .ko (no kernel needed).

``.modinfo`` gives the release it was built for (``vermagic``), whether it
is a live patch (``livepatch=Y``, added by modpost for CONFIG_LIVEPATCH
modules) and the name the kernel will know it by (``name=``); a module
built by pykpatch also lists the functions it replaces (``.pykpatch.funcs``).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from pykpatch.diff.output import FUNC_RECORD, FUNCS_SECTION
from pykpatch.elf.reader import read_elf
from pykpatch.kpatch_build.klp import KLP_RELA_PREFIX, KLP_SYM_PREFIX


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


def module_info(path: Path) -> ModuleInfo:
    """What a livepatch module built by pykpatch patches (read from the .ko, no kernel needed)."""
    obj = read_elf(path)
    info = ModuleInfo(path, module_name(str(path)), _modinfo(obj))
    funcs = next((s for s in obj.sections if s.name == FUNCS_SECTION), None)
    if funcs is not None and funcs.rela is not None:
        rels = {r.offset: r for r in funcs.rela.relocations or ()}
        fmt = "<Q" if obj.layout.endian == "little" else ">Q"
        for base in range(0, funcs.size, FUNC_RECORD):
            name_rel, obj_rel = rels.get(base + 8), rels.get(base + 16)
            if name_rel is None or obj_rel is None or name_rel.symbol is None or obj_rel.symbol is None:
                continue
            name = name_rel.symbol.section.string_at(name_rel.symbol.value + name_rel.addend)
            objname = obj_rel.symbol.section.string_at(obj_rel.symbol.value + obj_rel.addend)
            sympos = struct.unpack_from(fmt, funcs.data, base + 24)[0]
            info.functions.append((objname, name, sympos))
    info.klp_symbols = [s.name for s in obj.symbols if s.name.startswith(KLP_SYM_PREFIX)]
    info.klp_sections = [s.name for s in obj.sections if s.name.startswith(KLP_RELA_PREFIX)]
    return info
