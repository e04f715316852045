"""Fixtures of the provisioning tests: chroot test hosts with a real apt inside."""

from prep_assets_tests.provisioning.chroot_hosts import (  # noqa: F401
    chroot_hosts,
    sysstat_deb,
)
