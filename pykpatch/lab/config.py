"""Configure the lab kernel: ``make tinyconfig`` plus a livepatch fragment.

``tinyconfig`` keeps the build to minutes; the fragment (shipped in
``pykpatch/lab/data``) adds what livepatching needs and what real distro
kernels have.  Kconfig silently drops an option whose dependencies are not
met, so after ``olddefconfig`` every line of the fragment is checked against
the result: a kernel without ``CONFIG_LIVEPATCH`` would build fine and only
fail much later, confusingly, when a patch module refuses to load.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from pykpatch.errors import LabConfigError, LabError
from pykpatch.lab.cache import CONFIG_STAMP, read_stamp, write_stamp
from pykpatch.lab.logrun import lab_make, run_logged
from pykpatch.lab.machines import lab_machine

FRAGMENT_NAME = "livepatch-tiny.config"

# Options whose absence makes the lab pointless; checked even when a caller
# passes its own fragment that forgets them.  The console's option is the
# machine's (pykpatch.lab.machines), passed to verify_config beside these.
ESSENTIAL: Mapping[str, str] = MappingProxyType({
    "CONFIG_MODULES": "y",
    "CONFIG_MODULE_UNLOAD": "y",
    "CONFIG_LIVEPATCH": "y",
    "CONFIG_DYNAMIC_FTRACE_WITH_REGS": "y",
    "CONFIG_KALLSYMS_ALL": "y",
    "CONFIG_BLK_DEV_INITRD": "y",
})

_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")


# The lab kernels, by source series: 6.1 (Debian 12) and 6.12 (Debian 13, Debian 12 backports).
SERIES = ("6.1", "6.12")
DEFAULT_SERIES = "6.1"


def fragment_name(series: str = DEFAULT_SERIES, arch: str = "x86_64") -> str:
    if arch != "x86_64":
        return lab_machine(arch).fragment
    return FRAGMENT_NAME if series == DEFAULT_SERIES else f"livepatch-tiny-{series}.config"


def default_fragment(series: str = DEFAULT_SERIES, arch: str = "x86_64") -> str:
    """The fragment shipped with pykpatch for that source series and architecture.

    The cross machines (ppc64le, s390x) have a 6.1 kernel only: the lab's
    point there is the architecture, and one series keeps CI's cold builds
    to two.
    """
    if series not in SERIES:
        raise LabError(f"the lab has no kernel of series {series} (it builds {', '.join(SERIES)})")
    if arch != "x86_64" and series != DEFAULT_SERIES:
        raise LabError(f"the lab's {arch} kernel is of series {DEFAULT_SERIES} only, not {series}")
    return resources.files("pykpatch.lab").joinpath("data", fragment_name(series, arch)).read_text()


def parse_config(text: str) -> dict[str, str]:
    """Parse a ``.config`` or fragment into ``{option: value}``.

    "is not set" becomes ``"n"``.  Later lines win, as in ``merge_config.sh``.
    """
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        m = _SET.match(line)
        if m:
            values[m.group(1)] = m.group(2)
            continue
        m = _UNSET.match(line)
        if m:
            values[m.group(1)] = "n"
    return values


def verify_config(fragment: str, config: str,
                  essential: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Return ``(option, wanted, got)`` for every required value that is missing.

    Pure.  Every line of the fragment is required (the fragment is ours: a
    line that cannot survive is a bug in it), plus ``ESSENTIAL``.  An option
    absent from ``.config`` counts as ``n``, which is what Kconfig means by it.
    """
    wanted = dict(ESSENTIAL)
    wanted.update(essential or {"CONFIG_SERIAL_8250_CONSOLE": "y"})
    wanted.update(parse_config(fragment))
    got = parse_config(config)
    mismatches = []
    for option, value in wanted.items():
        actual = got.get(option, "n")
        if actual != value:
            mismatches.append((option, value, actual))
    return mismatches


def config_digest(config: str) -> str:
    """Hash of a ``.config``'s meaningful lines (comments and order ignored)."""
    items = sorted(parse_config(config).items())
    return hashlib.sha256("\n".join(f"{k}={v}" for k, v in items).encode()).hexdigest()


def configure(tree: Path, key_dir: Path, fragment: str, log: Path, jobs: int, *,
              variables: Mapping[str, str] | None = None, essential: Mapping[str, str] | None = None) -> Path:
    """Give ``tree`` a verified ``.config`` built from tinyconfig + ``fragment``.

    ``variables``: make's ``ARCH``/``CROSS_COMPILE`` of a cross machine;
    ``essential``: the machine's console option (x86_64's 8250 by default).

    Skipped when the stamp says this exact ``.config`` was produced and
    verified before.  Returns the path of ``.config``.
    """
    dotconfig = tree / ".config"
    stamp = key_dir / CONFIG_STAMP
    data = read_stamp(stamp)
    if (data is not None and dotconfig.is_file()
            and data.get("digest") == config_digest(dotconfig.read_text(errors="replace"))):
        return dotconfig
    stamp.unlink(missing_ok=True)

    frag_path = key_dir / FRAGMENT_NAME
    frag_path.write_text(fragment)
    lab_make(tree, ["tinyconfig"], log, "make tinyconfig", jobs, variables=variables)
    merge = tree / "scripts" / "kconfig" / "merge_config.sh"
    if not merge.is_file():
        raise LabError(f"{merge} is missing: is {tree} a kernel tree?")
    run_logged(["sh", str(merge), "-m", ".config", str(frag_path)], tree, log, what="merge_config.sh")
    lab_make(tree, ["olddefconfig"], log, "make olddefconfig", jobs, variables=variables)

    text = dotconfig.read_text(errors="replace")
    mismatches = verify_config(fragment, text, essential)
    if mismatches:
        raise LabConfigError(mismatches, str(dotconfig))
    write_stamp(stamp, {"digest": config_digest(text)})
    return dotconfig
