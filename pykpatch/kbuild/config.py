"""A kernel ``.config``: every option and its value, as kconfig means them."""

from __future__ import annotations

import re
from pathlib import Path

from pykpatch.errors import KernelInfoError

_CONFIG_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_CONFIG_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_CONFIG_ESCAPE = re.compile(r"\\(.)")


def read_config(config: Path) -> dict[str, str | None]:
    """All options of a kernel ``.config``: name -> value, None for "is not set".

    Values are as kconfig means them: ``"y"``, ``"m"``, the text of a
    number (``"0x1000"``, ``"-1"``), or a string without its quotes and
    escapes (``CONFIG_LOCALVERSION=""`` -> ``""``).  Options the file does
    not mention are absent.
    """
    try:
        text = config.read_text(errors="replace")
    except OSError as err:
        raise KernelInfoError(f"{config}: cannot read the kernel configuration: {err.strerror or err}",
                              hint="pass the kernel's .config (or /boot/config-RELEASE)") from None
    options: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.strip()
        match = _CONFIG_SET.match(line)
        if match:
            value = match.group(2)
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = _CONFIG_ESCAPE.sub(r"\1", value[1:-1])
            options[match.group(1)] = value
            continue
        match = _CONFIG_UNSET.match(line)
        if match:
            options[match.group(1)] = None
    return options


def config_value(config: Path, name: str) -> str | None:
    """One option's value in ``config`` (``name`` with or without ``CONFIG_``).

    None when the option is "not set" or absent: for kbuild both mean off.
    Reads the file on each call; use ``read_config`` for many look-ups.
    """
    key = name if name.startswith("CONFIG_") else f"CONFIG_{name}"
    return read_config(config).get(key)


# kbuild's SRCARCH of a configuration, by the option every config of that architecture has.
_SRCARCH_OPTIONS = (("CONFIG_X86", "x86"), ("CONFIG_PPC", "powerpc"), ("CONFIG_S390", "s390"),
                    ("CONFIG_ARM64", "arm64"), ("CONFIG_LOONGARCH", "loongarch"), ("CONFIG_RISCV", "riscv"))


def srcarch_of(options: dict[str, str | None]) -> str:
    """The ``arch/`` directory a configuration builds (x86 when it says nothing we know)."""
    return next((arch for option, arch in _SRCARCH_OPTIONS if options.get(option) == "y"), "x86")
