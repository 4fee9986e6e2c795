"""Pausing Python's cyclic garbage collector around work that builds large object graphs."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC for the duration of the block, restoring its previous state.

    Why: the symbol tables and the ELF models of a diff are ~10^5 small
    objects that live until the work ends.  Each generation-0 collection
    promotes them, and the generation-1 and -2 collections that follow
    rescan all of them: measured on the diff corpora, 11-12 % of a diff's
    time went to collections that freed nothing (ppc64le 0.12 of 1.06 s,
    s390x 0.07 of 0.60 s, x86_64 0.24 of 2.21 s), and building the name
    index of a vmlinux table took 7x longer.  Reference counting still frees
    acyclic temporaries at once; the cycles of the model (sections and their
    symbols) become garbage only when the block ends, and the first
    collection after it frees them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
