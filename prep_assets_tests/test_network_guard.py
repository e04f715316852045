"""The guard that keeps the test process's connections on loopback."""

import os
import socket

import pytest

from prep_assets_tests import network_guard


def test_documentation_address_is_refused():
    # 192.0.2.0/24 is reserved for documentation; the guard refuses it before any packet is sent.
    before = len(network_guard._violations)
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match="network guard"):
        sock.connect(("192.0.2.1", 9))

    assert network_guard._violations[before:] == ["('192.0.2.1', 9)"]
    del network_guard._violations[before:]


def test_loopback_is_allowed():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass


def test_environment_is_cleaned():
    assert os.environ["NO_PROXY"] == network_guard.LOOPBACK_ONLY
    assert os.environ["PREP_SSH_CONFIG"] == ""
    assert "HTTPS_PROXY" not in os.environ
