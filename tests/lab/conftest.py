"""Fixtures for tests that need a real kernel.

``lab_kernel`` builds the tiny livepatch kernel once per session (minutes
the first time on a machine, milliseconds afterwards: it is cached under
``~/.cache/pykpatch/lab``).  ``lab_boot`` boots it with steps.

These tests are meant to run everywhere, CI included: missing prerequisites
make them *fail* with the apt-get line to fix it, never skip, because a
silently skipped kernel test proves nothing.  Tests using ``lab_kernel`` are
marked ``kernel`` automatically, so ``-m "not kernel"`` gives a quick run.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from pykpatch.errors import LabError
from pykpatch.lab import BootResult, KernelBuild, Step, boot, ensure_kernel
from pykpatch.lab.debian import DebianKernel
from pykpatch.lab.debian import debian_kernel as fetch_debian_kernel
from pykpatch.lab.guest import GuestRootfs, ensure_rootfs

# Whole-run limit for a normal boot in the tests: a run takes ~4 s under
# TCG, but CI machines can be loaded; a hang still ends in bounded time.
BOOT_TIMEOUT = 90.0


# Fixtures that make a test a kernel test (marker `kernel`).
KERNEL_FIXTURES = frozenset({"lab_kernel", "lab_kernel_612", "debian_kernel", "guest_rootfs", "cross_suite"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if KERNEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kernel)


@contextlib.contextmanager
def _uncaptured(config: pytest.Config) -> Iterator[None]:
    """Let progress reach the terminal during a minutes-long cold build."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        yield
        return
    with capman.global_and_fixture_disabled():
        yield


def _progress_printer(pytestconfig: pytest.Config, what: str) -> Callable[[str], None]:
    started = time.monotonic()

    def progress(msg: str) -> None:
        with _uncaptured(pytestconfig):
            print(f"\n[{what} {time.monotonic() - started:6.0f}s] {msg}", file=sys.stderr, end="", flush=True)

    return progress


T = TypeVar("T")


def _or_fail(purpose: str, make: Callable[[], T]) -> T:
    """Run a lab preparation; a LabError fails the test with its message and hint (never a skip)."""
    try:
        return make()
    except LabError as err:
        hint = f"\nhint: {err.hint}" if err.hint else ""
        pytest.fail(f"cannot {purpose}: {err.message}{hint}", pytrace=False)


@pytest.fixture(scope="session")
def lab_kernel(pytestconfig: pytest.Config) -> KernelBuild:
    """The cached tiny livepatch kernel (built on first use)."""
    return _or_fail("build the lab kernel", lambda: ensure_kernel(progress=_progress_printer(pytestconfig, "lab")))


@pytest.fixture(scope="session")
def lab_kernel_612(pytestconfig: pytest.Config) -> KernelBuild:
    """The lab's Linux 6.12 kernel (IBT, call padding, call depth tracking), built on first use."""
    return _or_fail("build the lab's 6.12 kernel",
                    lambda: ensure_kernel(series="6.12", progress=_progress_printer(pytestconfig, "lab 6.12")))


@pytest.fixture(scope="session")
def guest_rootfs(pytestconfig: pytest.Config) -> GuestRootfs:
    """The lab's Debian root image (debootstrap once, minutes; then cached)."""
    return _or_fail("make the lab's Debian guest",
                    lambda: ensure_rootfs(progress=_progress_printer(pytestconfig, "guest")))


@pytest.fixture(scope="session")
def debian_kernel() -> DebianKernel:
    """Debian's own 6.1 kernel (image, modules, headers), fetched once into the cache."""
    return _or_fail("fetch Debian's kernel", fetch_debian_kernel)


BootFn = Callable[..., BootResult]


def booter(kernel: KernelBuild, tmp_path: Path) -> BootFn:
    """``boot(steps, modules=[...], timeout=..., append=...)`` of ``kernel``, run files in tmp_path.

    Modules may be paths or names of modules that kernel built.
    """
    counter = itertools.count()

    def run(
        steps: Sequence[Step | str],
        *,
        modules: Sequence[Path | str] = (),
        timeout: float = BOOT_TIMEOUT,
        **kwargs: object,
    ) -> BootResult:
        paths = [m if isinstance(m, Path) else kernel.module(m) for m in modules]
        workdir = tmp_path / f"boot{next(counter)}"
        try:
            return boot(kernel.boot_image, steps, modules=paths, timeout=timeout, workdir=workdir,
                        machine=kernel.machine, **kwargs)  # type: ignore[arg-type]
        except LabError as err:
            hint = f"\nhint: {err.hint}" if err.hint else ""
            pytest.fail(f"cannot boot the lab kernel: {err.message}{hint}", pytrace=False)

    return run


@pytest.fixture
def lab_boot(lab_kernel: KernelBuild, tmp_path: Path) -> BootFn:
    """Boot the lab kernel with steps (see ``booter``)."""
    return booter(lab_kernel, tmp_path)
