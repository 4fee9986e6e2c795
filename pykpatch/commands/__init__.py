"""Subcommand implementations for ``pykpatch`` (see ``pykpatch.cli``)."""
