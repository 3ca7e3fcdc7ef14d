"""A missing tool gives one clear sentence, not a stack trace."""

from __future__ import annotations

import pytest

from infra import kafka_broker
from infra.process import InfraError


def test_missing_maven_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("STOREPULSE_CACHE", str(tmp_path))
    monkeypatch.setattr(
        kafka_broker.shutil, "which", lambda tool: None if tool == "mvn" else "/usr/bin/" + tool
    )
    with pytest.raises(InfraError, match=r"`mvn` not found on PATH: install Maven"):
        kafka_broker.ensure_jars()


def test_cluster_id_has_kafka_uuid_shape():
    cid = kafka_broker._cluster_id()
    assert len(cid) == 22 and not cid.startswith("-")
