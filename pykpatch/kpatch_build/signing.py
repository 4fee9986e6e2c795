"""Which key signs the livepatch module, decided (and checked) before any compile.

A kernel with ``CONFIG_MODULE_SIG_FORCE=y`` (or booted with
``module.sig_enforce=1``, or under Secure Boot lockdown) refuses unsigned
modules, so a live patch for it must be signed with a key the kernel
trusts.  In order:

1. ``--sign-key KEY [--sign-cert CERT]`` (a PEM private key; the certificate
   may be in the same PEM file, as kbuild's own ``certs/signing_key.pem``);
2. when the target config has ``CONFIG_MODULE_SIG``: the tree's own kbuild
   key (``CONFIG_MODULE_SIG_KEY``, default ``certs/signing_key.pem``, with
   ``certs/signing_key.x509``) -- present when the kernel was built from
   this tree;
3. the machine's DKMS / shim MOK key, which distributions enroll for
   locally built modules (Debian: ``/var/lib/dkms/mok.key`` +
   ``mok.pub``; Ubuntu: ``/var/lib/shim-signed/mok/MOK.priv`` + ``MOK.der``).

``--no-sign`` turns this off.  Signing uses the tree's ``scripts/sign-file``
(built by kbuild when the config signs modules, shipped in Debian's
linux-kbuild package); when the tree has none it is compiled once from the
tree's ``scripts/sign-file.c`` into the cache (needs libssl-dev).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pykpatch.errors import ModuleBuildError
from pykpatch.kpatch_build.context import SigningOptions
from pykpatch.kpatch_build.kmod import Signing

MOK_KEYS: tuple[tuple[str, str], ...] = (
    ("/var/lib/dkms/mok.key", "/var/lib/dkms/mok.pub"),
    ("/var/lib/shim-signed/mok/MOK.priv", "/var/lib/shim-signed/mok/MOK.der"),
)


def _readable(path: Path, what: str) -> Path:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as err:
        raise ModuleBuildError(f"{what} {path}: cannot read it: {err.strerror or err}") from None
    return path


def _cert_of(key: Path, cert: Path | None) -> Path:
    if cert is not None:
        return _readable(cert, "signing certificate")
    if b"-----BEGIN CERTIFICATE-----" in key.read_bytes():
        return key
    raise ModuleBuildError(f"{key} holds no certificate", hint="give the key's certificate with --sign-cert CERT")


def tree_key(tree: Path, config: dict[str, str | None]) -> tuple[Path, Path] | None:
    """The tree's kbuild signing key and certificate, when the config signs modules and they exist."""
    key_name = config.get("CONFIG_MODULE_SIG_KEY") or "certs/signing_key.pem"
    if key_name.startswith("pkcs11:"):
        return None
    key = Path(key_name) if key_name.startswith("/") else tree / key_name
    if not key.is_file():
        return None
    x509 = tree / "certs" / "signing_key.x509"
    return key, (x509 if x509.is_file() else key)


def find_sign_file(tree: Path, cachedir: Path) -> Path:
    """The tree's scripts/sign-file, or one compiled from its source into ``cachedir``."""
    prebuilt = tree / "scripts" / "sign-file"
    if prebuilt.is_file() and os.access(prebuilt, os.X_OK):
        return prebuilt
    source = tree / "scripts" / "sign-file.c"
    if not source.is_file():
        raise ModuleBuildError(f"{tree} has neither scripts/sign-file nor its source",
                               hint="build it in the tree (make scripts) or give a tree that has it")
    built = cachedir / "sign-file"
    if built.is_file() and built.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        return built
    proc = subprocess.run(["gcc", "-O2", "-Wno-deprecated-declarations", "-I", str(tree / "scripts"), "-o",
                           str(built), str(source), "-lcrypto"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["gcc failed"])[0]
        raise ModuleBuildError(f"cannot build sign-file from {source}: {detail}",
                               hint="install libssl-dev (apt-get install libssl-dev)")
    return built


def resolve_signing(opts: SigningOptions, tree: Path, config: dict[str, str | None],
                    cachedir: Path) -> Signing | None:
    """The signing to apply, or None (see the module docstring); raises ``ModuleBuildError`` when unusable."""
    if opts.disabled:
        return None
    pair: tuple[Path, Path] | None = None
    if opts.key is not None:
        key = _readable(opts.key, "signing key")
        pair = (key, _cert_of(key, opts.cert))
    elif opts.cert is not None:
        raise ModuleBuildError("--sign-cert needs --sign-key")
    elif config.get("CONFIG_MODULE_SIG") == "y":
        pair = tree_key(tree, config) or next(
            ((Path(k), Path(c)) for k, c in MOK_KEYS if Path(k).is_file() and Path(c).is_file()), None)
    if pair is None:
        if config.get("CONFIG_MODULE_SIG_FORCE") == "y":
            raise ModuleBuildError(
                "the target kernel accepts only signed modules (CONFIG_MODULE_SIG_FORCE) and no signing key was found",
                hint="give the key the kernel trusts with --sign-key KEY --sign-cert CERT")
        return None
    digest = config.get("CONFIG_MODULE_SIG_HASH") or "sha256"
    return Signing(pair[0], pair[1], digest, find_sign_file(tree, cachedir))
