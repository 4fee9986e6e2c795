"""The diff engine: the live-patchable difference between two builds of one object.

``run_diff`` runs the pipeline in ``engine``; the output object's format is
documented in ``output``.
"""

from pykpatch.diff.engine import DiffResult, run_diff, struct_sizes_from_env

__all__ = ["DiffResult", "run_diff", "struct_sizes_from_env"]
