"""Trigger YAML, the store registry and settings fail with messages that say where and what."""

from __future__ import annotations

import pytest

from core.settings import Settings, SettingsError
from state.stores import StoreRegistryError, load_stores
from triggers.loader import TriggerFileError, load_paths


def test_sample_scenarios_are_valid():
    assert {t.id for t in load_paths(["scenarios"])} >= {"first-checkin-welcome"}


def test_errors_name_file_trigger_and_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("""
- id: ok-one
  name: fine
  when: {event: checkin}
  then: [{type: message, channel: push, template: hi}]
- id: broken
  name: broken
  when: {event: checkin}
  if: member.tier == = 'gold'
  then: [{type: message, channel: pigeon, template: hi}]
  guardrails: {cooldown: soon}
""")
    with pytest.raises(TriggerFileError) as info:
        load_paths([f])
    text = str(info.value)
    assert f"{f}: trigger broken: if: syntax error" in text and "column" in text
    assert "trigger broken: then[0].message.channel" in text
    assert "trigger broken: guardrails.cooldown" in text
    assert "ok-one" not in text


def test_duplicate_ids_are_rejected(tmp_path):
    doc = "id: same\nname: x\nwhen: {event: checkin}\nthen: [{type: staff_alert, template: t}]\n"
    (tmp_path / "a.yaml").write_text(doc)
    (tmp_path / "b.yaml").write_text(doc)
    with pytest.raises(TriggerFileError, match="id already defined"):
        load_paths([tmp_path])


def test_store_registry_errors_name_the_field(tmp_path):
    f = tmp_path / "stores.yaml"
    f.write_text("stores:\n  - {id: s1, name: One, timezone: Mars/Olympus}\n")
    with pytest.raises(
        StoreRegistryError, match=r"stores\[0\] \(s1\)\.timezone: .*unknown time zone"
    ):
        load_stores(str(f))


def test_settings_from_env_and_clear_errors():
    s = Settings.from_env({"KAFKA_BOOTSTRAP": "k:1", "STOREPULSE_PARTITIONS": "8"})
    assert (s.kafka_bootstrap, s.partitions, s.broker_url) == ("k:1", 8, "kafka://k:1")
    with pytest.raises(SettingsError, match="STOREPULSE_PARTITIONS='many'"):
        Settings.from_env({"STOREPULSE_PARTITIONS": "many"})
    with pytest.raises(SettingsError, match="PROCESSING_GUARANTEE"):
        Settings.from_env({"STOREPULSE_PROCESSING_GUARANTEE": "maybe"})
    # no setting that silently does something else: the batch path has no Kafka transactions
    with pytest.raises(SettingsError, match="only at_least_once"):
        Settings.from_env({"STOREPULSE_PROCESSING_GUARANTEE": "exactly_once"})
    assert Settings.from_env({}).analytics == {"derived-events", "decisions"}
    assert Settings.from_env({"STOREPULSE_ANALYTICS_TOPICS": ""}).analytics == frozenset()
    with pytest.raises(SettingsError, match="unknown \\['decision'\\]"):
        Settings.from_env({"STOREPULSE_ANALYTICS_TOPICS": "decision"})


def test_cli_validate_exits_0_when_valid_and_1_with_the_errors(tmp_path, capsys):
    import cli

    with pytest.raises(SystemExit) as ok:
        cli.main(["triggers", "validate", "scenarios"])
    assert ok.value.code == 0 and "trigger(s) valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: x\nname: x\nwhen: {event: checkin}\nif: 'member.tier =! 1'\n"
        "then: [{type: message, channel: push, template: hi}]\n"
    )
    with pytest.raises(SystemExit) as failed:
        cli.main(["triggers", "validate", str(bad)])
    err = capsys.readouterr().err
    assert failed.value.code == 1 and f"{bad}: trigger x: if: syntax error" in err
