"""x86_64 (placeholder while the seam is built: see pykpatch.arch)."""
