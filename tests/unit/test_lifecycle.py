"""Trigger versions and statuses, and named API keys with roles (pure: no Kafka)."""

from __future__ import annotations

from pathlib import Path

import pytest

from triggers.lifecycle import LifecycleError, audit_of, diff, next_record, read_record, versions
from web.keys import Keys, KeysFileError, add_key, read_keys, revoke_key

DOC = {"id": "t1", "name": "one"}


def test_publishes_make_versions_and_status_changes_keep_them():
    v1 = next_record(None, "publish", "alice", 1, "first", DOC)
    assert (v1["status"], v1["version"], v1["author"]) == ("live", 1, "alice")
    paused = next_record(v1, "pause", "bob", 2)
    assert (paused["status"], paused["version"]) == ("paused", 1)
    with pytest.raises(LifecycleError, match="only one that is live"):
        next_record(paused, "pause", "bob", 3)
    live = next_record(paused, "resume", "bob", 4)
    v2 = next_record(live, "publish", "alice", 5, "", {**DOC, "name": "two"})
    assert (v2["status"], v2["version"]) == ("live", 2)
    with pytest.raises(LifecycleError, match="publish the change as a new version"):
        next_record(v2, "draft", "alice", 6, "", DOC)
    archived = next_record(v2, "archive", "carol", 7)
    assert archived["status"] == "archived"


def test_versions_and_diff_come_from_the_audit():
    v1 = next_record(None, "publish", "alice", 1, "", DOC)
    v2 = next_record(v1, "publish", "bob", 2, "", {**DOC, "name": "two"})
    log = [
        audit_of("t1", "publish", v1, "alice", 1, ""),
        audit_of("t1", "pause", next_record(v1, "pause", "x", 2), "x", 2, ""),
        audit_of("t1", "publish", v2, "bob", 3, ""),
    ]
    found = versions(log)
    assert [v["version"] for v in found] == [1, 2]
    text = diff("t1", found[0], found[1])
    assert '-  "name": "one"' in text and '+  "name": "two"' in text and "(bob)" in text


def test_a_bare_definition_on_the_topic_reads_as_live_version_0():
    assert read_record(b'{"id": "t1"}')["status"] == "live"
    assert read_record(b'{"id": "t1"}')["version"] == 0
    with pytest.raises(ValueError, match="status"):
        read_record(b'{"definition": {}, "status": "deleted"}')


def test_keys_are_stored_as_hashes_and_revoked_live(tmp_path: Path):
    path = tmp_path / "keys.yaml"
    key = add_key(path, "alice", "editor")
    assert key not in path.read_text() and read_keys(path)[0]["name"] == "alice"
    keys = Keys(path, token=None, check_every_s=0)
    who = keys.principal(key)
    assert who is not None and (who.name, who.role) == ("alice", "editor")
    assert who.may("viewer") and who.may("editor") and not who.may("admin")
    assert keys.principal(key + "x") is None and keys.principal("") is None
    with pytest.raises(KeysFileError, match="exists"):
        add_key(path, "alice", "viewer")
    assert revoke_key(path, "alice")
    assert keys.principal(key) is None  # picked up without a restart


def test_the_api_token_is_one_admin_key(tmp_path: Path):
    keys = Keys(None, token="t0ken")
    who = keys.principal("t0ken")
    assert who is not None and (who.name, who.role) == ("token", "admin")


def test_a_bad_keys_file_is_refused_with_where(tmp_path: Path):
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - {name: a, role: boss, sha256: " + "0" * 64 + "}\n")
    with pytest.raises(KeysFileError, match=r"keys\[0\] \(a\): role 'boss'"):
        read_keys(path)


def test_moments_are_epoch_ms_iso_times_or_durations_ago():
    from core.durations import moment_ms

    now = 1_764_036_000_000
    assert moment_ms("7d", now) == now - 7 * 86_400_000
    assert moment_ms("1764036000000", now) == now
    assert moment_ms("2025-11-25T02:00:00Z", now) == now
    assert moment_ms("2025-11-25T02:00:00", now) == now  # UTC unless it says otherwise
    assert moment_ms(None, now) is None
    with pytest.raises(ValueError, match="ISO"):
        moment_ms("yesterday", now)
