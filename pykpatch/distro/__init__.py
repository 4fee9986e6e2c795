"""A distribution's kernel, as kpatch-build needs it: one provider module per distribution.

To live patch a distribution kernel without building it, kpatch-build needs,
for one release (``uname -r``), pieces the distribution already ships:

=====================  ===========================  ===========================  ==========================
piece                  Debian (implemented)         Ubuntu                       Fedora / RHEL
=====================  ===========================  ===========================  ==========================
sources                ``linux-source-X.Y``         ``linux-source-X.Y.Z``       ``kernel-X.src.rpm``
                       (tarball in /usr/src)        (tarball in /usr/src)        (rpmbuild -bp)
config                 ``linux-headers-R``          ``linux-headers-R``          ``kernel-devel-R``
                       .config                      .config                      .config
Module.symvers         ``linux-headers-R``          ``linux-headers-R``          ``kernel-devel-R``
compiler, release      ``.kernelvariables``         CONFIG_CC_VERSION_TEXT,      CONFIG_CC_VERSION_TEXT,
                       (CC=gcc-12, KERNELRELEASE)   utsrelease of the headers    utsrelease of -devel
vmlinux with symbols   ``linux-image-R-dbg``        ``linux-image-R-dbgsym``     ``kernel-debuginfo-R``
                       /usr/lib/debug/boot/         (ddebs archive)              /usr/lib/debug/lib/
                                                                                 modules/R/vmlinux
modules (.ko)          ``linux-image-R``            ``linux-modules-R``          ``kernel-modules-R``
                       /lib/modules/R/kernel        /lib/modules/R/kernel        (.ko.xz)
=====================  ===========================  ===========================  ==========================

A provider (``debian.py``) answers ``artifacts(release)`` with a
``KernelArtifacts`` of local paths, fetching with the system's package
manager into its cache what is not installed, and refusing when versions do
not match exactly (the source package's version must be the image's).
Adding Ubuntu or Fedora means one module implementing ``DistroProvider``
and a line in ``PROVIDERS``.
"""

from pykpatch.distro.base import DistroProvider, KernelArtifacts, provider_for_host

__all__ = ["DistroProvider", "KernelArtifacts", "provider_for_host"]
