"""The JSON state store and its atomic writes."""

import os

import pytest

from prep_assets.state import StateStore, write_atomically


def test_round_trip_per_partition(tmp_path):
    store = StateStore(tmp_path)
    store.write("tool_status", {"tools": []}, "pve1")

    assert store.read("tool_status", "pve1") == {"tools": []}
    assert store.read("tool_status", "pve2") is None
    assert store.read_many("tool_status", ["pve1", "pve2"]) == {"pve1": {"tools": []}}


@pytest.mark.parametrize(
    "key", ["../../etc/passwd", "a/b", "..", ".hidden", "iostat; touch /tmp/x"]
)
def test_partition_key_stays_in_folder(tmp_path, key):
    store = StateStore(tmp_path / "state")
    path = store.write("tool_status", {"ok": True}, key)

    assert path.resolve().parent == (tmp_path / "state" / "tool_status").resolve()
    assert store.read("tool_status", key) == {"ok": True}


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "value.json"
    write_atomically(target, "old\n")

    def broken_replace(source, destination):
        raise OSError("interrupted")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomically(target, "new\n")

    assert target.read_text() == "old\n"
    assert [path.name for path in tmp_path.iterdir()] == ["value.json"]
