"""kpatch-build: from patch files to a livepatch module.

- ``patches``     read, check, apply and revert patch files; crash recovery
- ``tree``        the kernel tree: original build cache, objects of a source
                  file, module membership, in-tree compiles
- ``kernelinfo``  facts read from the target kernel (release, compiler,
                  special-section struct sizes)
- ``pipeline``    the stages in order, with progress and a build log
"""
