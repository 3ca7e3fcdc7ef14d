"""The faust extensions: installed once, for the versions they were written for."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

import faust_ext
from faust_ext import empty_commit


async def test_a_commit_of_only_revoked_partitions_is_skipped_not_a_crash():
    empty_commit.install()
    calls = []
    thread = SimpleNamespace(
        assignment=lambda: set(),
        _ensure_consumer=lambda: calls.append("consumer") or SimpleNamespace(),
    )
    assert await AIOKafkaConsumerThread._commit(thread, {("t", 0): 5}) is False
    assert calls == []  # aiokafka's commit (ValueError on {}) was never reached


def test_other_faust_versions_are_refused_unless_allowed(monkeypatch):
    monkeypatch.setattr(faust_ext, "version", lambda name: "9.9.9")
    monkeypatch.delenv("STOREPULSE_ALLOW_UNTESTED_FAUST", raising=False)
    with pytest.raises(faust_ext.UntestedVersion, match=r"faust-streaming 0\.15\.3"):
        faust_ext.check_versions()
    monkeypatch.setenv("STOREPULSE_ALLOW_UNTESTED_FAUST", "1")
    faust_ext.check_versions()
