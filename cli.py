"""`storepulse`: the one command-line entry point (worker, demo, simulate, infra, triggers)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from core.durations import moment_ms
from core.settings import ROOT, Settings, SettingsError

if TYPE_CHECKING:
    from triggers.catalog import References

STATE_FILE = ROOT / ".run" / "infra.json"


def _fail(message: str, code: int = 2) -> int:
    print(f"storepulse: error: {message}", file=sys.stderr)
    return code


def cmd_worker(args: argparse.Namespace) -> int:
    """Create missing topics, check trigger and store files, then run a faust worker."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        return _fail(str(exc))
    defaults = settings.default_secrets()
    if defaults and not settings.loopback_only:
        return _fail(
            f"{' and '.join(defaults)} still have the values printed in StorePulse's source, and "
            "this worker is reachable beyond loopback (web host, Kafka or Redis): anyone could "
            "call its API or reverse its phone hashes. Set them to long random values, e.g. "
            "`export STOREPULSE_API_TOKEN=$(openssl rand -hex 32)`."
        )
    if defaults:
        print(
            f"storepulse: WARNING: {' and '.join(defaults)} at the local default; fine on "
            "loopback, refused on any other address",
            file=sys.stderr,
        )
    from aiokafka.errors import KafkaError

    from channels.config import ChannelConfigError, load_channels
    from faust_ext import quiet_client_loggers
    from infra.kafka_admin import create_topics
    from infra.process import InfraError
    from state.coupons import CouponConfigError, load_pools
    from state.loyalty import LoyaltyConfigError, load_loyalty
    from state.stores import StoreRegistryError, load_stores
    from triggers.loader import TriggerFileError, load_paths, references

    try:
        load_stores(settings.stores_path)
        load_loyalty(settings.loyalty_path)
        load_channels(settings.channels_path)
        load_pools(settings.coupons_path)
        files = load_paths(
            [p for p in settings.triggers_path.split(",") if p], references(settings)
        )
    except (
        StoreRegistryError,
        LoyaltyConfigError,
        ChannelConfigError,
        CouponConfigError,
        TriggerFileError,
    ) as exc:
        return _fail(f"invalid configuration:\n{exc}")
    import app as app_module

    app = app_module.build(
        settings
    )  # the one App of this process; everything below registers on it
    import topics
    from triggers.registry import seed

    try:
        asyncio.run(
            create_topics(
                settings.kafka(),
                topics.TOPIC_CONFIGS,
                settings.partitions,
                settings.replication,
            )
        )
        if files:  # trigger files (STOREPULSE_TRIGGERS_PATH) seed ids the topic lacks
            _, kept = asyncio.run(
                seed(settings.kafka(), topics.TRIGGERS_TOPIC, files, topics.AUDIT_TOPIC)
            )
            if kept:
                print(
                    f"storepulse: {len(kept)} trigger file(s) not published: the triggers topic "
                    "has those ids already (API edits win; `storepulse triggers publish` "
                    "overwrites)",
                    file=sys.stderr,
                )
    except (InfraError, KafkaError) as exc:
        return _fail(str(exc))
    import agents
    import web.api  # noqa: F401 - registers the pages

    agents.register()

    # Table changelogs too: faust declares them itself, but `make chaos` caught it skipping one
    # ("Ignoring missing topic") on a broker that had just restarted; every write to that table
    # was then refused. Creating them here, like every other topic, takes faust out of the path.
    try:
        asyncio.run(
            create_topics(
                settings.kafka(),
                {
                    t.changelog_topic_name: {"cleanup.policy": "compact"}
                    for t in app.tables.values()
                },
                settings.partitions,
                settings.replication,
            )
        )
    except InfraError as exc:
        return _fail(str(exc))

    quiet_client_loggers()
    sys.argv = ["storepulse", "worker", "--loglevel", settings.log_level]
    app.main()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sim import demo

    return demo.main(args.duration, args.rate, args.members)


def cmd_simulate(args: argparse.Namespace) -> int:
    from sim.simulator import Simulator
    from state.stores import load_stores

    settings = Settings.from_env()
    sim = Simulator(
        settings.kafka_bootstrap,
        list(load_stores(settings.stores_path).values()),
        members=args.members,
        rate=args.rate,
        duration=args.duration,
        bad_ratio=args.bad_ratio,
    )
    counts = asyncio.run(sim.run())
    print(json.dumps(dict(counts)))
    return 0


def cmd_infra(args: argparse.Namespace) -> int:
    from infra.kafka_broker import KafkaBroker
    from infra.process import InfraError, stop_group
    from infra.redis_server import RedisServer

    if args.action == "down":
        if not STATE_FILE.exists():
            print("nothing to stop")
            return 0
        state = json.loads(STATE_FILE.read_text())
        for pid in state.get("pids", []):
            stop_group(pid)
        STATE_FILE.unlink()
        print("stopped")
        return 0
    if STATE_FILE.exists():
        return _fail(f"already up ({STATE_FILE}); run `storepulse infra down` first")
    workdir = ROOT / ".run" / "infra"
    kafka = KafkaBroker(workdir / "kafka")
    redis = RedisServer(workdir / "redis")
    try:
        bootstrap = kafka.start()
        redis_url = redis.start()
    except InfraError as exc:
        kafka.stop()
        redis.stop()
        return _fail(str(exc))
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(
        json.dumps(
            {
                "pids": [kafka.pid, redis.pid],
                "started": time.time(),
                "KAFKA_BOOTSTRAP": bootstrap,
                "REDIS_URL": redis_url,
            }
        )
    )
    print(f"export KAFKA_BOOTSTRAP={bootstrap}\nexport REDIS_URL={redis_url}")
    return 0


def _references() -> References:
    """Pools, stores and zones from the configuration the environment names (STOREPULSE_*)."""
    from triggers.loader import references

    return references(Settings.from_env())


def cmd_triggers_validate(args: argparse.Namespace) -> int:
    """Exit 1 and one line per problem (file, trigger, field, what to do) on any error."""
    from state.coupons import CouponConfigError
    from state.stores import StoreRegistryError
    from triggers.loader import TriggerFileError, load_paths

    try:
        triggers = load_paths(args.paths, _references())
    except (SettingsError, StoreRegistryError, CouponConfigError) as exc:
        return _fail(str(exc))
    except TriggerFileError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    print(f"{len(triggers)} trigger(s) valid")
    return 0


def cmd_triggers_publish(args: argparse.Namespace) -> int:
    """Validate trigger files and publish them to the triggers topic (live on every worker)."""
    from topics import AUDIT_TOPIC, TRIGGERS_TOPIC
    from triggers.loader import TriggerFileError, load_paths
    from triggers.registry import publish, published

    try:
        triggers = load_paths(args.paths, _references()) if args.paths else []
    except TriggerFileError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    settings = Settings.from_env()
    author = f"cli:{getpass.getuser()}"

    async def run() -> None:
        current = await published(settings.kafka(), TRIGGERS_TOPIC)
        versions = {d.id: (r["version"] if (r := current.get(d.id)) else 0) + 1 for d in triggers}
        await publish(
            settings.kafka(),
            TRIGGERS_TOPIC,
            triggers,
            args.delete or [],
            audit_topic=AUDIT_TOPIC,
            author=author,
            note=args.note,
            versions=versions,
        )

    asyncio.run(run())
    print(f"published {len(triggers)} trigger(s), deleted {len(args.delete or [])}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Named API keys with roles in STOREPULSE_API_KEYS_FILE; workers pick changes up live."""
    from web.keys import KeysFileError, add_key, read_keys, revoke_key

    settings = Settings.from_env()
    if not settings.api_keys_file:
        return _fail("set STOREPULSE_API_KEYS_FILE to the keys file (it is created if missing)")
    path = Path(settings.api_keys_file)
    try:
        if args.keys_command == "add":
            key = add_key(path, args.name, args.role)
            print(f"{args.name} ({args.role}): {key}")
            print("shown once: only its SHA-256 is stored", file=sys.stderr)
        elif args.keys_command == "list":
            for entry in read_keys(path):
                print(f"{entry['name']}\t{entry['role']}")
        elif not revoke_key(path, args.name):
            return _fail(f"no key named {args.name!r} in {path}", 1)
        else:
            print(f"revoked {args.name}")
    except KeysFileError as exc:
        return _fail(str(exc))
    return 0


def api_call(method: str, path: str, body: object = None) -> tuple[int, object]:
    """A call to a worker's API: STOREPULSE_API_URL (the local worker's port by default) with
    STOREPULSE_API_KEY (or STOREPULSE_API_TOKEN)."""
    import urllib.error
    import urllib.request

    settings = Settings.from_env()
    base = os.environ.get("STOREPULSE_API_URL") or f"http://127.0.0.1:{settings.web_port}"
    key = os.environ.get("STOREPULSE_API_KEY") or settings.api_token
    request = urllib.request.Request(
        base.rstrip("/") + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def api_result(what: str, method: str, path: str, body: object = None) -> tuple[int, object]:
    """(exit code, answer) of an API call, a failure said on stderr: the worker unreachable (2)
    or its refusal with the HTTP status and the error it gave (1)."""
    try:
        status, answer = api_call(method, path, body)
    except OSError as exc:
        return _fail(f"cannot reach the worker's API ({exc}); set STOREPULSE_API_URL"), None
    if status >= 400:
        error = answer.get("error") or answer.get("errors") if isinstance(answer, dict) else answer
        return _fail(f"{what}: HTTP {status}: {error}", 1), None
    return 0, answer


def cmd_triggers_lifecycle(args: argparse.Namespace) -> int:
    """versions, diff, pause, resume, archive, rollback of one trigger, through a worker's API
    (the key's name is the author in the audit)."""
    from urllib.parse import quote, urlencode

    tid = quote(args.trigger_id, safe="")
    command = args.triggers_command
    what = f"{command} {args.trigger_id}"
    if command == "versions":
        code, body = api_result(what, "GET", f"/triggers/{tid}/versions")
    elif command == "diff":
        query = {k: v for k, v in (("from", args.from_), ("to", args.to)) if v is not None}
        code, body = api_result(what, "GET", f"/triggers/{tid}/diff?{urlencode(query)}")
    else:
        path = f"/triggers/{tid}/{command}"
        if command == "rollback":
            path += f"?to={args.to}"
        code, body = api_result(what, "POST", path, {"note": args.note})
    if code:
        return code
    if command == "versions" and isinstance(body, dict):
        for v in body["versions"]:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(v["at"] / 1000))
            print(f"v{v['version']}\t{v['status']}\t{when}Z\t{v['author']}\t{v['note']}")
    elif command == "diff" and isinstance(body, dict):
        print(body["diff"], end="")
    else:
        print(json.dumps(body))
    return 0


def cmd_members(args: argparse.Namespace) -> int:
    """Member data rights through a worker's API (STOREPULSE_API_URL, STOREPULSE_API_KEY):
    erase (admin), export (admin: everything held about the member, as JSON), consent
    CHANNEL grant|revoke (editor), unbind KIND VALUE (admin); and
    reindex (Redis and Kafka directly: bindings made before erasure's index existed)."""
    from urllib.parse import quote

    command = args.members_command
    if command == "reindex":
        return _reindex()
    mid = quote(args.member_id, safe="")
    what = f"members {command} {args.member_id}"
    if command == "erase":
        code, body = api_result(what, "DELETE", f"/members/{mid}")
    elif command == "export":
        code, body = api_result(what, "GET", f"/members/{mid}/export")
    elif command == "consent":
        doc = {"granted": args.decision == "grant", "source": args.source}
        code, body = api_result(what, "PUT", f"/members/{mid}/consent/{args.channel}", doc)
    else:
        doc = {"kind": args.kind, "value": args.value}
        code, body = api_result(what, "POST", f"/members/{mid}/unbind", doc)
    if code:
        return code
    print(json.dumps(body))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Load past records (POS sales and refunds, CRM profiles, identity links) from CSV with a
    header or JSON Lines into member state and identity, without the age limit and without
    firing triggers; a second import of the same file changes nothing. Columns are the input
    event's fields (docs/events.md); `ts` in epoch ms or ISO; `items` as JSON in its cell."""
    from edge.history import import_file

    settings = Settings.from_env()
    if not args.file.is_file():
        return _fail(f"{args.file}: no such file")
    try:
        summary = asyncio.run(import_file(args.topic, args.file, settings))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return _fail(f"import {args.topic} {args.file}: {exc}")
    print("\n".join(summary.lines()))
    return 0


def _reindex() -> int:
    """Index every binding on identity-bindings under its member (Redis), so erasure finds
    bindings made before the index existed."""
    from state.rebuild import reindex
    from state.redis_store import redis_client

    settings = Settings.from_env()

    async def run() -> int:
        client = redis_client(settings)
        try:
            return await reindex(client, settings)
        finally:
            await client.aclose()

    print(f"indexed {asyncio.run(run())} identifier bindings")
    return 0


def cmd_triggers_backtest(args: argparse.Namespace) -> int:
    """Replay the recorded member events (member-events, within its retention) through the same
    pipeline with these definitions beside the live ones (or instead of them, --instead);
    writes nothing to Kafka or to member state. `-` reads a JSON list of definitions from stdin."""
    from pydantic import ValidationError

    from state.coupons import CouponConfigError
    from state.stores import StoreRegistryError
    from triggers.loader import TriggerFileError, describe_errors, load_paths
    from triggers.model import TriggerDef
    from triggers.replay import backtest

    settings = Settings.from_env()
    try:
        if [str(p) for p in args.paths] == ["-"]:
            docs = json.loads(sys.stdin.read() or "[]")
            drafts = [TriggerDef.model_validate(d, context=_references()) for d in docs]
        else:
            drafts = load_paths(args.paths, _references())
    except (StoreRegistryError, CouponConfigError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            return _fail("; ".join(describe_errors(exc, "definitions")), 1)
        return _fail(str(exc), 1)
    except TriggerFileError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    now = int(time.time() * 1000)
    try:
        since, until = moment_ms(args.from_, now), moment_ms(args.to, now)
    except ValueError as exc:
        return _fail(f"--from/--to: {exc}")

    def progress(done: int, total: int) -> None:
        if args.json or not total:
            return
        width = 30
        filled = int(width * min(done, total) / total)
        print(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} records",
            end="",
            file=sys.stderr,
            flush=True,
        )

    mode: Literal["beside", "instead"] = "instead" if args.instead else "beside"
    report = asyncio.run(backtest(settings, drafts, mode, since, until, progress))
    if args.json:
        print(json.dumps(report))
        return 0
    print("", file=sys.stderr)
    run, window = report["run"], report["window"]
    print(
        f"{window['events']:,} events of {window['members']:,} members in "
        f"{run['seconds']} s ({run['events_per_s']:,} events/s), {run['triggers']} triggers"
    )
    for tid, r in report["triggers"].items():
        suppressed = ", ".join(f"{k} {v}" for k, v in r["suppressed"].items()) or "none"
        print(f"{tid}: {r['fires']} fires to {r['members']} members, {r['held_out']} held out")
        print(f"  suppressed: {suppressed}; messages: {r['messages_by_channel'] or 'none'}")
        for pool, c in r["coupons"].items():
            print(
                f"  coupons {pool}: {c['issued']} (value {c['face_value']}) "
                f"against a budget of {c['budget']}, {c['over_budget']} over"
            )
        print(f"  by day: {r['fires_by_day']}")
    print(f"cannot know: {report['cannot_know']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The closed loop per trigger from what Kafka holds (decisions, deliveries, conversions):
    candidates, fired, held out, delivered, failed, redeemed, converted, revenue, coupon cost,
    conversion rates treated vs control and the uplift with its 95 % interval."""
    from triggers.replay import trigger_report

    settings = Settings.from_env()
    now = int(time.time() * 1000)
    try:
        since, until = moment_ms(args.from_, now), moment_ms(args.to, now)
    except ValueError as exc:
        return _fail(f"--from/--to: {exc}")
    report = asyncio.run(trigger_report(settings, args.trigger, since, until))
    if args.json:
        print(json.dumps(report))
        return 0
    head = (
        "trigger",
        "fired",
        "held out",
        "delivered",
        "failed",
        "redeemed",
        "converted",
        "rate",
        "control rate",
        "uplift [95 % CI]",
        "revenue",
        "coupon cost",
    )
    rows = [head]
    for tid, r in report["triggers"].items():
        up = r["uplift"]
        uplift = (
            f"{up['difference']:+.1%} [{up['ci95'][0]:+.1%}, {up['ci95'][1]:+.1%}]"
            + (" *" if up["significant"] else "")
            if up
            else "-"
        )
        rows.append(
            (
                tid,
                r["fired"],
                r["held_out"],
                r["delivered"],
                r["failed"],
                r["redeemed"],
                r["converted"],
                "-" if r["conversion_rate"] is None else f"{r['conversion_rate']:.1%}",
                "-"
                if r["conversion_rate_control"] is None
                else f"{r['conversion_rate_control']:.1%}",
                uplift,
                f"{r['revenue']:.2f}",
                f"{r['coupon_cost']:.2f}",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    if report["redemptions_not_attributed"]:
        print(f"redemptions not attributed: {report['redemptions_not_attributed']}")
    print("* significant at 95 % (Newcombe hybrid score interval)")
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    from contracts import export as schemas_export

    for path in schemas_export.export(args.directory):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storepulse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "worker",
        help="run a stream-processing worker (settings from STOREPULSE_*)",
        description=cmd_worker.__doc__,
        epilog=(
            "Settings come from the environment (README, Settings): KAFKA_BOOTSTRAP "
            "(127.0.0.1:9092), REDIS_URL (redis://127.0.0.1:6379/0), STOREPULSE_WEB_HOST and "
            "STOREPULSE_WEB_PORT (127.0.0.1:6066, the HTTP API and /metrics), "
            "STOREPULSE_API_TOKEN (the API key; change-me-local-token locally), "
            "STOREPULSE_HASH_SECRET, STOREPULSE_PARTITIONS (4)."
        ),
    ).set_defaults(fn=cmd_worker)

    demo = sub.add_parser(
        "demo",
        help="local demo: Kafka, Redis, worker, simulator, actions",
        description=run_demo_doc(),
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("DURATION", 60)),
        help="seconds of simulated traffic after the worker is ready (default: $DURATION or 60)",
    )
    demo.add_argument("--rate", type=float, default=20.0, help="events per second")
    demo.add_argument("--members", type=int, default=200, help="simulated shoppers")
    demo.set_defaults(fn=cmd_demo)

    sim = sub.add_parser("simulate", help="produce simulated mall events into KAFKA_BOOTSTRAP")
    sim.add_argument("--rate", type=float, default=50.0, help="events per second")
    sim.add_argument("--duration", type=float, default=60.0, help="seconds")
    sim.add_argument("--members", type=int, default=1000, help="simulated shoppers")
    sim.add_argument("--bad-ratio", type=float, default=0.02, help="share of malformed records")
    sim.set_defaults(fn=cmd_simulate)

    infra = sub.add_parser("infra", help="start or stop a local Kafka and Redis (`up` / `down`)")
    infra.add_argument(
        "action",
        choices=["up", "down"],
        help="up: start Kafka and Redis on free loopback ports and print their variables; "
        "down: stop them",
    )
    infra.set_defaults(fn=cmd_infra)

    trig = sub.add_parser("triggers", help="work with trigger definitions")
    trig_sub = trig.add_subparsers(dest="triggers_command", required=True)
    validate = trig_sub.add_parser("validate", help="validate trigger YAML files; exit 1 on errors")
    validate.add_argument(
        "paths",
        nargs="+",
        type=Path,
        help="trigger YAML files or folders (checked against the "
        "pools, stores and zones of the configuration in STOREPULSE_*_PATH)",
    )
    validate.set_defaults(fn=cmd_triggers_validate)
    pub = trig_sub.add_parser("publish", help="publish trigger files to the triggers topic")
    pub.add_argument("paths", nargs="*", type=Path, help="trigger YAML files or folders")
    pub.add_argument("--delete", action="append", metavar="ID", help="delete a trigger by id")
    pub.add_argument("--note", default="", help="change note recorded with the new versions")
    pub.set_defaults(fn=cmd_triggers_publish)
    for name, text in (
        ("versions", "a trigger's versions: number, status, time, author, note"),
        ("diff", "a unified diff of two versions (default: the last two)"),
        ("pause", "stop a live trigger firing, on every worker within a second"),
        ("resume", "make a paused trigger live again"),
        ("archive", "retire a trigger (its history and reports stay)"),
        ("rollback", "publish a new version equal to an earlier one"),
    ):
        life = trig_sub.add_parser(name, help=text, description=cmd_triggers_lifecycle.__doc__)
        life.add_argument("trigger_id", help="the trigger's id")
        if name == "diff":
            life.add_argument("--from", dest="from_", type=int, help="older version")
            life.add_argument("--to", type=int, help="newer version")
        elif name == "rollback":
            life.add_argument("--to", type=int, required=True, help="the version to go back to")
        if name not in ("versions", "diff"):
            life.add_argument("--note", default="", help="change note for the audit")
        life.set_defaults(fn=cmd_triggers_lifecycle)
    back = trig_sub.add_parser(
        "backtest",
        help="what triggers would have done on the recorded member events",
        description=cmd_triggers_backtest.__doc__,
    )
    back.add_argument("paths", nargs="+", type=Path, help="trigger YAML files or folders, or -")
    back.add_argument("--from", dest="from_", help="start: epoch ms, ISO time, or ago (7d)")
    back.add_argument("--to", help="end: epoch ms, ISO time, or ago (1h); default: now")
    back.add_argument("--instead", action="store_true", help="without the live triggers")
    back.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    back.set_defaults(fn=cmd_triggers_backtest)
    rep = sub.add_parser(
        "report",
        help="the closed loop per trigger: funnel, conversions, uplift",
        description=cmd_report.__doc__,
    )
    rep.add_argument("--trigger", help="one trigger (default: all)")
    rep.add_argument("--from", dest="from_", help="start: epoch ms, ISO time, or ago (7d)")
    rep.add_argument("--to", help="end: epoch ms, ISO time, or ago; default: now")
    rep.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    rep.set_defaults(fn=cmd_report)
    imp = sub.add_parser(
        "import", help="load past POS, member or identity records", description=cmd_import.__doc__
    )
    imp.add_argument("topic", choices=["pos", "members", "identity"])
    imp.add_argument("file", type=Path, help="FILE.csv (with a header) or FILE.jsonl")
    imp.set_defaults(fn=cmd_import)
    members = sub.add_parser(
        "members",
        help="member data rights: erase, export, consent, unbind",
        description=cmd_members.__doc__,
    )
    members_sub = members.add_subparsers(dest="members_command", required=True)
    erase = members_sub.add_parser("erase", help="erase a member's data everywhere (admin)")
    erase.add_argument("member_id")
    erase.set_defaults(fn=cmd_members)
    export = members_sub.add_parser(
        "export", help="everything held about a member, as JSON (admin; access requests)"
    )
    export.add_argument("member_id")
    export.set_defaults(fn=cmd_members)
    consent = members_sub.add_parser("consent", help="grant or revoke one channel (editor)")
    consent.add_argument("member_id")
    consent.add_argument("channel", choices=["push", "sms", "wechat", "email"])
    consent.add_argument("decision", choices=["grant", "revoke"])
    consent.add_argument("--source", default="cli", help="who or what asked (service-desk)")
    consent.set_defaults(fn=cmd_members)
    members_sub.add_parser(
        "reindex", help="index every identifier binding under its member (for erasure)"
    ).set_defaults(fn=cmd_members)
    unbind = members_sub.add_parser("unbind", help="unbind an identifier from a member (admin)")
    unbind.add_argument("member_id")
    unbind.add_argument("kind", choices=["member_card", "phone", "openid", "app_device_id", "mac"])
    unbind.add_argument("value")
    unbind.set_defaults(fn=cmd_members)
    keys = sub.add_parser("keys", help="named API keys with roles (STOREPULSE_API_KEYS_FILE)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    add = keys_sub.add_parser("add", help="make a key; prints it once")
    add.add_argument("name", help="who holds the key (the author in the audit)")
    add.add_argument("--role", choices=["viewer", "editor", "admin"], required=True)
    add.set_defaults(fn=cmd_keys)
    keys_sub.add_parser("list", help="names and roles").set_defaults(fn=cmd_keys)
    revoke = keys_sub.add_parser("revoke", help="remove a key; workers refuse it within a second")
    revoke.add_argument("name")
    revoke.set_defaults(fn=cmd_keys)
    schemas = sub.add_parser("schemas", help="JSON Schemas of the input topics and triggers")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_sub.add_parser("export", help="write schemas/<topic>.schema.json")
    export.add_argument(
        "directory", nargs="?", type=Path, default=ROOT / "schemas", help="default: schemas/"
    )
    export.set_defaults(fn=cmd_schemas_export)
    return parser


def run_demo_doc() -> str:
    return (
        "Starts a local Kafka and Redis, a worker with the sample triggers in scenarios/, and "
        "the simulator; prints each action as it fires and a summary; stops everything."
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    sys.exit(args.fn(args))


if __name__ == "__main__":
    main()
