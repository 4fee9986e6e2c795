"""Module.symvers: the kernel's exported symbols, their CRCs, modules and namespaces."""

from __future__ import annotations

import os
from typing import NamedTuple

from pykpatch.errors import SymtabError


class SymversEntry(NamedTuple):
    """One export of Module.symvers.

    ``module`` is as written ("vmlinux", "drivers/net/tun"); ``objname`` is
    kpatch's klp object name for it (basename, '-' -> '_').  ``namespace`` is
    "" when the export has none or the file predates namespaces (< 5.4).
    """

    crc: int
    module: str
    export_type: str
    namespace: str = ""

    @property
    def objname(self) -> str:
        return self.module.rsplit("/", 1)[-1].replace("-", "_")

    @property
    def is_vmlinux(self) -> bool:
        return self.module == "vmlinux"


class ModuleSymvers:
    """Exported symbols, from a Module.symvers file.

    The three layouts real kernels wrote (``scripts/mod/modpost.c``
    ``write_dump``), told apart per line by where the ``EXPORT_*`` column is:

    - before 5.4:   ``crc  symbol  module  export_type``
      (2.6-era files have no export_type column: 3 columns)
    - 5.4 to 5.9:   ``crc  symbol  namespace  module  export_type``
    - 5.10 onward:  ``crc  symbol  module  export_type  namespace``
      (the namespace column is always there, empty for most exports)

    Columns are tab-separated.  An empty file is valid (no exports).
    """

    def __init__(self, entries: dict[str, SymversEntry] | None = None, path: str = "<memory>") -> None:
        self.path = path
        self.entries: dict[str, SymversEntry] = entries if entries is not None else {}

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModuleSymvers:
        path_s = os.fspath(path)
        try:
            with open(path_s, "rb") as fh:
                raw = fh.read()
        except OSError as err:
            raise SymtabError(f"{path_s}: cannot read: {err.strerror or err}") from None
        if b"\0" in raw:
            raise SymtabError(f"{path_s}: not a Module.symvers file (binary data)")
        return cls(cls.parse(raw.decode("latin-1"), path_s), path_s)

    @staticmethod
    def parse(text: str, path: str = "<memory>") -> dict[str, SymversEntry]:
        entries: dict[str, SymversEntry] = {}
        lines_of: dict[str, int] = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            cols = line.split("\t")
            n = len(cols)
            if n == 5:
                if cols[3].startswith("EXPORT_"):      # 5.10+: crc sym module export ns
                    crc_s, name, module, export, namespace = cols
                elif cols[4].startswith("EXPORT_"):    # 5.4-5.9: crc sym ns module export
                    crc_s, name, namespace, module, export = cols
                else:
                    raise SymtabError(f"{path}: line {lineno}: no EXPORT_* column in {line[:80]!r}")
            elif n == 4:
                crc_s, name, module, export = cols
                namespace = ""
            elif n == 3:
                crc_s, name, module = cols
                export = namespace = ""
            else:
                raise SymtabError(f"{path}: line {lineno}: expected 4 or 5 tab-separated columns, got {n}")
            try:
                crc = int(crc_s, 16)
            except ValueError:
                raise SymtabError(f"{path}: line {lineno}: bad CRC {crc_s!r}") from None
            if not name or not module or any(c.isspace() for c in name + module):
                raise SymtabError(f"{path}: line {lineno}: empty or malformed symbol/module column")
            if name in entries:
                raise SymtabError(f"{path}: line {lineno}: symbol {name!r} exported twice "
                                  f"(first at line {lines_of[name]})")
            entries[name] = SymversEntry(crc, module, export, namespace)
            lines_of[name] = lineno
        return entries

    def lookup(self, name: str) -> SymversEntry | None:
        return self.entries.get(name)

    def is_exported(self, name: str) -> bool:
        return name in self.entries

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"<ModuleSymvers {self.path} exports={len(self.entries)}>"
