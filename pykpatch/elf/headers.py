"""ELF header and section headers of a (possibly huge) file, with sections read on demand.

``read_elf`` builds the whole object graph, which is what the diff wants for
a 100 kB object.  A distribution vmlinux is ~600 MB with debug info; its
users (the kernel symbol table, the release banner, the compiler string)
need one to three sections of it.  ``ElfHeaders`` reads the ELF header and
the section header table only (a few kilobytes) and hands out single
sections, every offset and size checked against the file.  Errors are
``ElfFormatError`` naming the file; callers with their own error type
translate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from pykpatch.elf.constants import ELF_MAGIC, SHN, SHT, ElfClass, ElfData
from pykpatch.elf.structs import ElfLayout, layout_for
from pykpatch.errors import ElfFormatError


@dataclass(frozen=True)
class SectionHeader:
    """One section header as stored (``name`` decoded from the section name table)."""

    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int


class ElfHeaders:
    """See the module docstring.  Use as a context manager, or ``close()``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._fh: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close() / __exit__
        except OSError as err:
            raise ElfFormatError(self.path, f"cannot read: {err.strerror or err}") from None
        try:
            self.file_size = os.fstat(self._fh.fileno()).st_size
            self._parse()
        except BaseException:
            self._fh.close()
            raise

    def __enter__(self) -> ElfHeaders:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    # -- reading ---------------------------------------------------------------------
    def read_at(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset > self.file_size or size > self.file_size - offset:
            raise ElfFormatError(self.path, f"{what} ({size:#x} bytes at {offset:#x}) is past the end of the file")
        self._fh.seek(offset)
        data = self._fh.read(size)
        if len(data) != size:
            raise ElfFormatError(self.path, f"{what} is truncated")
        return data

    def _parse(self) -> None:
        ident = self.read_at(0, min(16, self.file_size), "ELF identification")
        if len(ident) < 16 or ident[:4] != ELF_MAGIC:
            raise ElfFormatError(self.path, "not an ELF file (bad magic)")
        if ident[4] not in (ElfClass.ELFCLASS32, ElfClass.ELFCLASS64):
            raise ElfFormatError(self.path, f"unknown ELF class {ident[4]}")
        if ident[5] not in (ElfData.ELFDATA2LSB, ElfData.ELFDATA2MSB):
            raise ElfFormatError(self.path, f"unknown ELF byte order {ident[5]}")
        self.layout: ElfLayout = layout_for(ident[4], ident[5])
        ehdr = self.layout.ehdr.unpack(self.read_at(0, self.layout.ehdr.size, "ELF header"))
        self.e_type, self.machine = ehdr[1], ehdr[2]
        shoff, shentsize, shnum, shstrndx = ehdr[6], ehdr[11], ehdr[12], ehdr[13]
        self.sections: list[SectionHeader] = []
        if shoff == 0:
            return
        shdr = self.layout.shdr
        if shentsize != shdr.size:
            raise ElfFormatError(self.path, f"section header size {shentsize} (expected {shdr.size})")
        first = shdr.unpack(self.read_at(shoff, shdr.size, "section header table"))
        count = shnum or first[5]  # extended numbering: the count is in sh_size of [0]
        if shstrndx == SHN.XINDEX:
            shstrndx = first[6]
        raw = self.read_at(shoff, count * shdr.size, f"section header table ({count} entries)")
        rows = list(shdr.iter_unpack(raw))
        names = b""
        if 0 < shstrndx < count:
            names = self.read_at(rows[shstrndx][4], rows[shstrndx][5], "section name table")
        for index, h in enumerate(rows):
            end = names.find(b"\0", h[0]) if h[0] < len(names) else -1
            name = names[h[0]:end].decode("latin-1") if end >= 0 else ""
            self.sections.append(SectionHeader(index, name, *h[1:]))

    # -- looking up --------------------------------------------------------------------
    def named(self, name: str) -> SectionHeader | None:
        return next((s for s in self.sections if s.name == name), None)

    def of_type(self, sh_type: int) -> list[SectionHeader]:
        return [s for s in self.sections if s.type == sh_type]

    def section(self, index: int, what: str) -> SectionHeader:
        if not 0 < index < len(self.sections):
            raise ElfFormatError(self.path, f"{what}: section index {index} out of range ({len(self.sections)})")
        return self.sections[index]

    def data(self, header: SectionHeader) -> bytes:
        """The bytes of one section (empty for SHT_NOBITS)."""
        if header.type == SHT.NOBITS:
            return b""
        return self.read_at(header.offset, header.size, f"section {header.name or header.index}")
