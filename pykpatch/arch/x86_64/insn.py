"""x86-64 instruction length decoder (long mode only, pure Python).

The diff engine needs instruction boundaries, not full disassembly: which
instruction holds a relocation (a PC-relative addend is measured from the
instruction's end) and where the immediate of ``mov $imm32, %esi`` lives
(``__LINE__`` arguments).  ``decode`` finds, for one instruction, its
prefixes, opcode, ModRM, displacement and immediate -- enough for both.

Tables are indexed by opcode byte (``bytes`` objects, built once at import);
one entry packs "has ModRM", the immediate kind and "needs special handling".

``Insn.opcode`` encodes the opcode map with the final opcode byte:

===================  ================================================
one-byte map         ``0x00``-``0xff``
``0f xx``            ``0x0f00 | xx``
``0f 38 xx``         ``0x0f3800 | xx``
``0f 3a xx``         ``0x0f3a00 | xx``
VEX / EVEX map 1-3   same as 0f / 0f38 / 0f3a (the implied escape)
EVEX map 5, 6        ``map << 16 | xx`` (``0x50000 | xx``, ``0x60000 | xx``)
XOP map 8, 9, 0xa    ``0x8f0000 | map << 8 | xx``
===================  ================================================

For VEX/EVEX/XOP the prefix bytes themselves are not in ``prefixes`` and
``rex`` is 0 (their R/X/B/W bits are folded into the prefix).

Immediate fields (``imm_offset``/``imm_size``) also cover branch
displacements (``call``/``jmp``/``jcc`` rel8/rel32, ``xbegin``), the 8-byte
absolute address of ``mov`` moffs (a0-a3, 4 bytes with 67), and both
immediates of ``enter`` (3 bytes) and SSE4a ``extrq``/``insertq`` (2 bytes).
``disp_*`` is the ModRM displacement only (RIP-relative included).

Semantics chosen where CPUs or tools disagree (compilers emit none of these
forms): a 66 prefix on a near ``call``/``jmp``/``jcc`` is ignored (Intel and
the kernel's insn decoder: rel32; objdump follows AMD: rel16); a REX
followed by a legacy prefix is ignored (objdump prints it as a separate
``rex`` line); ``0f ff`` (UD0) is two bytes, without ModRM, as AMD defines it
and the kernel's insn decoder reads it -- old kernels' ``.text..refcount``
code depends on that (Intel and objdump give it a ModRM).  ``9b`` (fwait) is
one instruction of its own; objdump folds it into a following x87 opcode.

Validation is structural: opcodes invalid in 64-bit mode (06, 07, 0e, 16,
17, 1e, 1f, 27, 2f, 37, 3f, 60, 61, 82, 9a, ce, d4-d6, ea), undefined 0f
opcodes, unused encodings of groups 3/4/5/11, bad VEX/EVEX/XOP maps, more
than 15 bytes and truncation raise ``X86DecodeError``.  Inside the
0f/0f38/0f3a/VEX/EVEX maps an undefined opcode/prefix combination is
decoded with the map's generic format rather than rejected.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from pykpatch.errors import X86DecodeError

__all__ = ["MAX_INSN_LEN", "Insn", "decode", "insn_containing", "iter_insns"]

MAX_INSN_LEN = 15


@dataclass(frozen=True, slots=True)
class Insn:
    """One decoded instruction; ``imm_offset``/``disp_offset`` are relative to ``offset``."""

    offset: int
    length: int
    opcode: int
    prefixes: bytes
    rex: int
    modrm: int | None
    imm_offset: int | None
    imm_size: int
    disp_offset: int | None
    disp_size: int

    @property
    def end(self) -> int:
        """Offset of the next instruction (what PC-relative operands are relative to)."""
        return self.offset + self.length


class _InsnBuilder:
    """Same slot layout as ``Insn`` but mutable: ``_decode`` fills one and then
    re-labels it ``Insn`` (``__class__`` assignment between classes with
    identical ``__slots__``).  Building through the frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` call per field) cost ~4x more and
    dominated decoding time."""

    # The fields of ``Insn`` again, for the type checker (annotations only: the slots hold them);
    # mypy flags a field of ``Insn`` that ``_decode`` sets and this list lacks.
    offset: int
    length: int
    opcode: int
    prefixes: bytes
    rex: int
    modrm: int | None
    imm_offset: int | None
    imm_size: int
    disp_offset: int | None
    disp_size: int

    __slots__ = Insn.__slots__


_new = object.__new__


# --- tables ------------------------------------------------------------------
# Entry layout: bits 0-3 immediate kind, 0x10 ModRM, 0x20 group check after the
# ModRM, 0x40 invalid in 64-bit mode, 0x80 escape / special opcode.
# ib, iw, iz (2 with 66 unless REX.W), iv (b8+r: 8/2/4), enter (iw+ib), moffs (8, 4 with 67),
# rel32 (66 ignored), iw2 (ib,ib), id (imm32)
_IB, _IW, _IZ, _IV, _ENTER, _MOFFS, _REL32, _IW2, _ID = 1, 2, 3, 4, 5, 6, 7, 8, 9
_M, _G, _X, _E = 0x10, 0x20, 0x40, 0x80


def _table(default: int, *spec: tuple[str, int]) -> bytes:
    """Build a 256-entry table from ("lo-hi lo2 ...", value) pairs (hex)."""
    t = [default] * 256
    for ranges, val in spec:
        for r in ranges.split():
            lo, _, hi = r.partition("-")
            for i in range(int(lo, 16), int(hi or lo, 16) + 1):
                t[i] = val
    return bytes(t)


# Legacy prefixes -> 1, REX -> 2.
_PFX = _table(0, ("26 2e 36 3e 64 65 66 67 f0 f2 f3", 1), ("40-4f", 2))

_ALU = " ".join(f"{b:02x}-{b + 3:02x}" for b in range(0, 0x40, 8))  # op r/m,r & r,r/m
_ONE = _table(
    0,
    (_ALU, _M),
    ("04 0c 14 1c 24 2c 34 3c", _IB), ("05 0d 15 1d 25 2d 35 3d", _IZ),
    ("06 07 0e 16 17 1e 1f 27 2f 37 3f 60 61 82 9a ce d4 d5 d6 ea", _X),
    ("0f 62 8f c4 c5", _E),
    ("63 84-8e d0-d3 d8-df", _M),
    ("68", _IZ), ("69", _M | _IZ), ("6a 70-7f a8 b0-b7 cd e0-e7 eb", _IB), ("6b", _M | _IB),
    ("80 83 c0 c1", _M | _IB), ("81", _M | _IZ),
    ("a0-a3", _MOFFS), ("a9", _IZ), ("b8-bf", _IV),
    ("c2 ca", _IW), ("c8", _ENTER), ("e8 e9", _REL32),
    ("c6", _M | _G | _IB), ("c7", _M | _G | _IZ), ("f6 f7 fe ff", _M | _G),
)

_TWO = _table(
    _M,
    ("04 0a 0c 24-27 36 39 3b-3f 7a 7b", _X),
    ("05-09 0b 0e 30-35 37 77 a0-a2 a8-aa c8-cf ff", 0),
    ("0f 70-73 a4 ac ba c2 c4-c6", _M | _IB),
    ("20-23 38 3a 78 b8", _E),
    ("80-8f", _REL32),
)

# VEX/EVEX opcode map 1 (0f): vzeroupper/vzeroall have no ModRM; some take imm8.
_VEX1 = _table(_M, ("77", 0), ("70-73 c2 c4-c6", _M | _IB))
# Per map number (VEX mmmmm / EVEX mmm): opcode base and table; None = invalid.
_MAP2 = _table(_M)
_MAP3 = _table(_M | _IB)
_VMAPS: tuple = (None, (0x0F00, _VEX1), (0x0F3800, _MAP2), (0x0F3A00, _MAP3)) + (None,) * 28
_EMAPS: tuple = (None, (0x0F00, _VEX1), (0x0F3800, _MAP2), (0x0F3A00, _MAP3), None,
                 (0x50000, _MAP2), (0x60000, _MAP2), None)
_XMAPS = {8: (0x8F0800, _MAP3), 9: (0x8F0900, _MAP2), 10: (0x8F0A00, _table(_M | _ID))}

# ModRM (mod != 3) -> displacement bytes before SIB adjustment.
_DISP = bytes((4 if (m & 7) == 5 else 0) if m < 0x40 else (1 if m < 0x80 else 4) for m in range(0xC0))


# --- decoder -------------------------------------------------------------------
def _decode(code, off: int, limit: int) -> Insn:
    """Decode the instruction at ``off``; bytes at or past ``limit`` are unavailable."""
    p = off
    rex = 0
    opsz = adsz = False
    rep = 0
    odd = False
    try:
        b = code[p]
        k = _PFX[b]
        while k:
            if k == 2:
                rex = b
            else:
                if rex:
                    rex = 0
                    odd = True
                if b == 0x66:
                    opsz = True
                elif b == 0x67:
                    adsz = True
                elif b >= 0xF2:
                    rep = b
            p += 1
            if p - off >= MAX_INSN_LEN:
                raise X86DecodeError(off, "more than 15 bytes of prefixes")
            b = code[p]
            k = _PFX[b]
        pend = p - 1 if rex else p
        p += 1
        f = _ONE[b]
        op = b
        modrm = None
        if f & 0xC0:
            if f & _X:
                raise X86DecodeError(off, f"opcode {b:#04x} is invalid in 64-bit mode",
                                     code[off:p])
            if b == 0x0F:
                b = code[p]
                p += 1
                op = 0x0F00 | b
                f = _TWO[b]
                if f & 0xC0:
                    if f & _X:
                        raise X86DecodeError(off, f"opcode 0f {b:02x} is invalid", code[off:p])
                    if b == 0x38:
                        op = 0x0F3800 | code[p]
                        p += 1
                        f = _M
                    elif b == 0x3A:
                        op = 0x0F3A00 | code[p]
                        p += 1
                        f = _M | _IB
                    elif b == 0x78:  # vmread; 66: extrq, f2: insertq (ib, ib)
                        f = _M | _IW2 if opsz or rep == 0xF2 else _M
                    elif b == 0xB8:  # popcnt needs f3 (jmpe is IA-64 only)
                        if rep != 0xF3:
                            raise X86DecodeError(off, "opcode 0f b8 without f3", code[off:p])
                        f = _M
                    else:  # 0f 20-23 mov to/from CR/DR: mod is ignored, no displacement
                        modrm = code[p]
                        p += 1
                        f = 0
            elif b == 0x8F and code[p] & 0x38:  # XOP (AMD); pop r/m has reg == 0
                x1 = code[p]
                ent = _XMAPS.get(x1 & 0x1F)
                if ent is None:
                    raise X86DecodeError(off, f"XOP map {x1 & 0x1f} is invalid", code[off:p + 1])
                b = code[p + 2]
                p += 3
                op = ent[0] | b
                f = ent[1][b]
                rex = 0
            elif b == 0x8F:
                f = _M
            else:  # VEX c5 / c4, EVEX 62
                if b == 0xC5:
                    ent = _VMAPS[1]
                    p += 1
                elif b == 0xC4:
                    ent = _VMAPS[code[p] & 0x1F]
                    p += 2
                else:
                    if not code[p + 1] & 4:
                        raise X86DecodeError(off, "EVEX P1 bit 2 is clear", code[off:p + 2])
                    ent = _EMAPS[code[p] & 7]
                    p += 3
                if ent is None:
                    raise X86DecodeError(off, f"{'EVEX' if b == 0x62 else 'VEX'} opcode map "
                                         "is invalid", code[off:p])
                b = code[p]
                p += 1
                op = ent[0] | b
                f = ent[1][b]
                rex = 0

        disp_off = None
        disp_size = 0
        if f & _M:
            modrm = m = code[p]
            p += 1
            if m < 0xC0:
                disp_size = _DISP[m]
                if (m & 7) == 4:
                    if m < 0x40 and (code[p] & 7) == 5:
                        disp_size = 4
                    p += 1
                if disp_size:
                    disp_off = p - off
                    p += disp_size
            if f & _G:
                reg = (m >> 3) & 7
                if op == 0xF6 or op == 0xF7:  # group 3: test /0 /1 take an immediate
                    if reg < 2:
                        f = _IB if op == 0xF6 else _IZ
                elif op == 0xFF:
                    if reg == 7 or (m >= 0xC0 and (reg == 3 or reg == 5)):
                        raise X86DecodeError(off, f"invalid ff /{reg}", code[off:p])
                elif op == 0xFE:
                    if reg > 1:
                        raise X86DecodeError(off, f"invalid fe /{reg}", code[off:p])
                elif reg and m != 0xF8:  # c6/c7: mov /0, xabort/xbegin (modrm f8)
                    raise X86DecodeError(off, f"invalid {op:02x} /{reg}", code[off:p])

        kind = f & 0x0F
        if kind:
            if kind == _IB:
                n = 1
            elif kind == _IZ:
                n = 2 if opsz and not rex & 8 else 4
            elif kind == _REL32:
                n = 4
            elif kind == _IV:
                n = 8 if rex & 8 else (2 if opsz else 4)
            elif kind in (_IW, _IW2):
                n = 2
            elif kind == _ENTER:
                n = 3
            elif kind == _MOFFS:
                n = 4 if adsz else 8
            else:  # _ID: XOP map 0xa imm32
                n = 4
            imm_off = p - off
            p += n
        else:
            imm_off = None
            n = 0
    except IndexError:
        raise X86DecodeError(off, "truncated instruction", code[off:limit]) from None

    length = p - off
    if p > limit:
        raise X86DecodeError(off, f"truncated instruction (needs {length} bytes, "
                             f"{limit - off} left)", code[off:limit])
    if length > MAX_INSN_LEN:
        raise X86DecodeError(off, f"instruction longer than 15 bytes ({length})", code[off:p])
    if pend == off:
        prefixes = b""
    else:
        prefixes = bytes(code[off:pend])
        if odd:
            prefixes = bytes(x for x in prefixes if not 0x40 <= x <= 0x4F)
    ins = _new(_InsnBuilder)
    ins.offset = off
    ins.length = length
    ins.opcode = op
    ins.prefixes = prefixes
    ins.rex = rex
    ins.modrm = modrm
    ins.imm_offset = imm_off
    ins.imm_size = n
    ins.disp_offset = disp_off
    ins.disp_size = disp_size
    done: object = ins  # as an ``object``, its class may be set to any class (with the same slots)
    done.__class__ = Insn
    # The relabelled builder is an Insn; typing.cast would say so at the cost of a call per instruction.
    return done  # type: ignore[return-value]


def _as_bytes(code) -> bytes:
    return code if type(code) is bytes else bytes(code)


def decode(code: bytes | memoryview, offset: int = 0) -> Insn:
    """Decode the one instruction starting at ``offset`` of ``code``."""
    size = len(code)
    if not 0 <= offset < size:
        raise X86DecodeError(offset, f"offset outside the {size}-byte code")
    if type(code) is not bytes:
        # Copy a window only: callers may hand a view of a large section.
        window = bytes(code[offset:offset + MAX_INSN_LEN])
        ins = _decode(window, 0, len(window))
        return Insn(offset, ins.length, ins.opcode, ins.prefixes, ins.rex, ins.modrm,
                    ins.imm_offset, ins.imm_size, ins.disp_offset, ins.disp_size)
    return _decode(code, offset, size)


def iter_insns(code, start: int = 0, end: int | None = None) -> Iterator[Insn]:
    """Instructions from ``start`` up to ``end`` (default: the end of ``code``).

    An instruction that would cross ``end`` raises ``X86DecodeError``.
    """
    code = _as_bytes(code)
    limit = len(code) if end is None else min(end, len(code))
    pos = start
    dec = _decode
    while pos < limit:
        ins = dec(code, pos, limit)
        yield ins
        pos += ins.length


def insn_containing(code, target_offset: int) -> Insn:
    """The instruction covering ``target_offset``, by linear sweep from offset 0.

    The sweep's instruction starts are cached per distinct ``code`` (a few
    hundred most recent), so asking for every relocation of a function costs
    one sweep plus a bisect and one decode per call.
    """
    code = _as_bytes(code)
    size = len(code)
    if not 0 <= target_offset < size:
        raise X86DecodeError(target_offset, f"offset outside the {size}-byte code")
    starts, stop = _starts(code)
    if target_offset >= stop:  # the sweep failed at ``stop``: raise its error afresh
        _decode(code, stop, size)
    return _decode(code, starts[bisect_right(starts, target_offset) - 1], size)


@lru_cache(maxsize=256)
def _starts(code: bytes) -> tuple[list[int], int]:
    """Instruction starts of a linear sweep, and where it stopped (end or first error)."""
    starts: list[int] = []
    pos = 0
    size = len(code)
    dec = _decode
    try:
        while pos < size:
            n = dec(code, pos, size).length
            starts.append(pos)
            pos += n
    except X86DecodeError:
        pass
    return starts, pos
