"""Operations on real parts: store feed health on a live worker; alert rules with promtool; every
dashboard and alert expression parsed by a real Prometheus that scrapes the worker."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from typing import Any

import yaml

from core.settings import ROOT
from infra.prometheus import PrometheusServer, promtool
from tests.integration.conftest import http
from tests.integration.test_ingestion import ev, uid


def feed(port: int, store: str, source: str) -> dict[str, Any]:
    status, body = http(port, "GET", "/stores/health")
    assert status == 200, body
    (found,) = [f for f in body["feeds"] if (f["store"], f["source"]) == (store, source)]
    return dict(found)


async def test_a_store_whose_beacons_stop_in_opening_hours_is_silent(worker, send):
    for _ in range(3):
        e = ev(
            "ranging",
            store_id="test-feeds",
            beacon_id="b-feeds-cos",
            rssi=-60,
            app_device_id=uid("dev"),
        )
        await send("beacons", e, key=e["app_device_id"].encode())
    deadline = time.monotonic() + 15
    while (now := feed(worker.web_port, "test-feeds", "beacons"))["last_event_at"] is None:
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.3)
    assert now["open"] and not now["silent"] and now["age_s"] < 3
    await asyncio.sleep(4)
    later = feed(worker.web_port, "test-feeds", "beacons")
    assert later["silent"] and later["age_s"] >= 3


DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\b((?:storepulse|faust)_[a-z_]+)\b")


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard panel target and every alert rule."""
    found = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for p in json.loads(path.read_text())["panels"]:
            found += [(f"{path.name}: {p['title']}", t["expr"]) for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        found += [(f"alerts.yml: {r['alert']}", r["expr"]) for r in group["rules"]]
    return found


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    checked = promtool("check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(ROOT / "tests" / "prometheus" / "alerts_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {
        r["alert"]
        for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    tests = yaml.safe_load((ROOT / "tests" / "prometheus" / "alerts_test.yml").read_text())["tests"]
    for name in names:  # every alert is tested firing and staying quiet
        outcomes = {
            bool(t["alert_rule_test"][0]["exp_alerts"])
            for t in tests
            if t["alert_rule_test"][0]["alertname"] == name
        }
        assert outcomes == {True, False}, name


async def test_every_dashboard_and_alert_expression_works_on_prometheus_scraping_a_worker(
    worker, tmp_path
):
    server = PrometheusServer(
        tmp_path / "prometheus",
        [f"127.0.0.1:{worker.web_port}"],
        rules=[DEPLOY / "prometheus" / "alerts.yml"],
    )
    server.start()
    try:
        deadline = time.monotonic() + 30
        while not any(t["health"] == "up" for t in server.api("targets")["activeTargets"]):
            assert time.monotonic() < deadline, server.api("targets")
            await asyncio.sleep(0.5)
        text = await asyncio.to_thread(metrics_text, worker.web_port)
        exported = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
        for where, expr in expressions():
            server.api("query", query=expr)  # raises with Prometheus's parse error
            for name in METRIC.findall(expr):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in exported or base in exported, f"{where}: {name} is not exported"
        deadline = time.monotonic() + 20
        while True:  # the rules were loaded and evaluated without error
            groups = server.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules):
                break
            assert time.monotonic() < deadline, rules
            await asyncio.sleep(0.5)
        assert {r["health"] for r in rules} == {"ok"}, [r for r in rules if r["health"] != "ok"]
        assert len(rules) == len([w for w in expressions() if w[0].startswith("alerts.yml")])
    finally:
        server.stop()
