"""Working state of one diff: the two objects and what each stage learns about them.

The ELF model stays pure; everything the diff infers about an element (its
twin in the other object, whether it changed, whether it goes into the
output) lives in dicts keyed by the model objects themselves (identity
hashing), gathered here so that every stage reads and writes one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

from pykpatch.arch import ArchInfo, Role
from pykpatch.elf.model import ElfObject, Relocation, Section, Symbol


class Status(Enum):
    SAME = "same"
    CHANGED = "changed"
    NEW = "new"


@dataclass
class ObjectFacts:
    """Facts derived from one object alone (before correlation)."""

    obj: ElfObject
    # kpatch's "bundled" symbol: the function/object that owns a whole
    # -ffunction-sections / -fdata-sections section (``.text.foo`` -> foo).
    bundled: dict[Section, Symbol] = field(default_factory=dict)
    parent: dict[Symbol, Symbol] = field(default_factory=dict)
    children: dict[Symbol, list[Symbol]] = field(default_factory=dict)
    has_hook: set[Symbol] = field(default_factory=set)
    grouped: set[Section] = field(default_factory=set)
    ignored: set[Section] = field(default_factory=set)
    # String literal a relocation points at (when its target is a string section).
    string: dict[Relocation, str] = field(default_factory=dict)
    # FILE symbol block each local symbol belongs to (for the parent lookup).
    file_of: dict[Symbol, Symbol] = field(default_factory=dict)
    # Entries of the arch's indirect table (ppc64 .toc) by offset: the relocation each entry holds.
    table_entries: dict[int, Relocation] = field(default_factory=dict)
    table: Section | None = None
    # Section offset of a function's ftrace site as its __patchable_function_entries record says.
    entry_site: dict[Symbol, int] = field(default_factory=dict)
    # __pfx_/__cfi_ symbols sitting at the start of a function's section.
    prefix_of: dict[Section, list[Symbol]] = field(default_factory=dict)


# What the pipeline pairs, judges and includes: a section (of any kind) or a symbol.
Element = Section | Symbol
# One kind of element: twins are always of the same kind (a section's twin is a section).
E = TypeVar("E", Section, Symbol)


@dataclass
class DiffState:
    """Everything the pipeline stages share."""

    orig: ObjectFacts
    patched: ObjectFacts
    arch: ArchInfo
    name: str  # object name used in messages (basename of the original)
    # Twins, both ways (original -> patched and patched -> original), one map per kind of element
    # so that a look-up says what it returns.
    section_twin: dict[Section, Section] = field(default_factory=dict)
    symbol_twin: dict[Symbol, Symbol] = field(default_factory=dict)
    status: dict[Element, Status] = field(default_factory=dict)
    include: set[Element] = field(default_factory=set)
    # Unsupported changes found so far: one line each, naming section/function.
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Relocation types compared through a table entry (Role.INDIRECT), looked up per relocation.
    indirect_types: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        self.indirect_types = self.arch.types(Role.INDIRECT)

    # -- twins ----------------------------------------------------------------
    def correlate(self, a: E, b: E) -> None:
        """Make ``a`` (original) and ``b`` (patched) twins; the patched one takes the original's name."""
        # (the pairing is written out, not a helper: this runs for every paired element)
        if isinstance(a, Section):
            self.section_twin[a] = b
            self.section_twin[b] = a
        else:
            self.symbol_twin[a] = b
            self.symbol_twin[b] = a
        self.status[a] = self.status[b] = Status.SAME
        if a.name != b.name:
            b.name = a.name

    def uncorrelate(self, a: E) -> None:
        if isinstance(a, Section):
            _unpair(self.section_twin, a)
        else:
            _unpair(self.symbol_twin, a)

    def status_of(self, elem: Element) -> Status:
        return self.status.get(elem, Status.SAME)

    def error(self, message: str) -> None:
        self.errors.append(message)


def _unpair(twins: dict[E, E], a: E) -> None:
    b = twins.pop(a, None)
    if b is not None:
        twins.pop(b, None)
