"""gc_paused: the cyclic GC is off inside the block and back to its previous state after it."""

from __future__ import annotations

import gc

import pytest

from pykpatch.gcpause import gc_paused


@pytest.fixture
def gc_state():
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_paused_inside_and_enabled_again_after(gc_state) -> None:
    gc.enable()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_enabled_again_after_an_exception(gc_state) -> None:
    gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_caller_that_disabled_the_gc_keeps_it_disabled(gc_state) -> None:
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_nested_pauses_restore_the_outer_state(gc_state) -> None:
    gc.enable()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_as_a_decorator_each_call_pauses(gc_state) -> None:
    seen = []

    @gc_paused()
    def work() -> None:
        seen.append(gc.isenabled())

    gc.enable()
    work()
    work()
    assert seen == [False, False]
    assert gc.isenabled()
