"""Fixtures of the provisioning tests: chroot test hosts and roots with a real apt inside."""

from prep_assets_tests.provisioning.chroot_hosts import (  # noqa: F401
    chroot_hosts,
    chroot_roots,
    sysstat_deb,
)
