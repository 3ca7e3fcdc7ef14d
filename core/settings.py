"""One frozen settings object, read from the environment with local defaults."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the repository (core/ is one level down)

_PROCESSING_GUARANTEES = ("at_least_once",)
_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
# Values printed here for local runs: a worker reachable from other hosts refuses them.
DEFAULT_API_TOKEN = "change-me-local-token"
DEFAULT_HASH_SECRET = "local-dev-secret-do-not-use-in-production"
_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


class SettingsError(ValueError):
    """A setting has a value StorePulse cannot use; the message names the variable."""


# Well-known names that also work without the prefix (docker-compose, ops habits).
_UNPREFIXED = {"KAFKA_BOOTSTRAP", "REDIS_URL"}


def _env(name: str, default: str, environ: dict[str, str]) -> str:
    """`STOREPULSE_<NAME>` wins; `_UNPREFIXED` names are read bare as a fallback."""
    fallback = environ.get(name, default) if name in _UNPREFIXED else default
    return environ.get(f"STOREPULSE_{name}", fallback)


def _int(name: str, default: int, environ: dict[str, str], minimum: int = 0) -> int:
    raw = _env(name, str(default), environ)
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"STOREPULSE_{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"STOREPULSE_{name}={value} must be at least {minimum}")
    return value


def _bool(name: str, default: bool, environ: dict[str, str]) -> bool:
    raw = _env(name, "1" if default else "0", environ).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"STOREPULSE_{name}={raw!r}: use 1 or 0")


def _float(name: str, default: float, environ: dict[str, str]) -> float:
    raw = _env(name, str(default), environ)
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"STOREPULSE_{name}={raw!r} is not a number") from None
    if value <= 0:
        raise SettingsError(f"STOREPULSE_{name}={value} must be above 0")
    return value


def parse_caps(text: str) -> dict[str, tuple[int, int]]:
    """`push:3/10,sms:1/3` -> {"push": (3, 10), "sms": (1, 3)} (per day, per week)."""
    caps: dict[str, tuple[int, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            channel, limits = item.split(":")
            day, week = (int(x) for x in limits.split("/"))
        except ValueError:
            raise SettingsError(
                f"STOREPULSE_FREQUENCY_CAPS: {item!r} is not channel:per_day/per_week"
            ) from None
        caps[channel.strip()] = (day, week)
    return caps


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    app_id: str = "storepulse"
    topic_prefix: str = ""
    partitions: int = 4
    replication: int = 1
    data_dir: str = str(ROOT / ".run" / "data")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    advertised_host: str = ""  # host other workers reach this one at; default: web_host
    # Where members reach the public pages (unsubscribe links): https://crm.example.com/sp
    public_url: str = ""
    store_url: str = "rocksdb://"
    processing_guarantee: str = "at_least_once"
    triggers_path: str = str(ROOT / "scenarios")
    stores_path: str = str(ROOT / "config" / "stores.yaml")
    loyalty_path: str = str(ROOT / "config" / "loyalty.yaml")
    channels_path: str = str(ROOT / "config" / "channels.yaml")
    coupons_path: str = str(ROOT / "config" / "coupons.yaml")
    redis_prefix: str = "sp"
    # Redis over TLS (`rediss://` URLs): the CA bundle that signed the server's certificate.
    redis_tls_ca: str = ""
    # Kafka client security: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; SASL with SCRAM-SHA-512
    # (or SCRAM-SHA-256, PLAIN), TLS with a CA bundle and optionally a client certificate.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    api_token: str = DEFAULT_API_TOKEN
    # Named keys with roles (web/keys.py): YAML of {name, role, sha256}; `storepulse keys add`.
    api_keys_file: str = ""
    # Secret for the keyed hash of MACs and phones; the default is for local runs only.
    hash_secret: str = DEFAULT_HASH_SECRET
    # /metrics without a key (Prometheus scrapes it); 0: it needs the API key like every route.
    metrics_public: bool = True
    # Input fields beyond the schema that are kept, per topic: `pos:cashier_id,checkins:campaign`.
    # Every other undeclared field is dropped at the edge (it may hold a raw identifier).
    extra_fields: str = ""
    # A trigger whose evaluation raises on this many events within the window is paused on this
    # worker until it is published again (one bad definition must not flood logs and metrics).
    trigger_error_limit: int = 20
    trigger_error_window_s: float = 60.0
    max_message_bytes: int = 64 * 1024
    # An input record may carry a batch envelope {"events": [...]} of at most this many events
    # and bytes (each event still within max_message_bytes).
    max_batch_events: int = 500
    max_batch_bytes: int = 1024 * 1024
    # Agents gather what arrives within this window (or until `batch_max_records`) and handle it
    # as one batch: one Redis round trip, one record per destination partition. It bounds the
    # delay a quiet stream sees; a busy one fills a batch sooner.
    batch_window_ms: int = 20
    batch_max_records: int = 1000
    dedup_window_s: int = 24 * 3600
    import_dedup_s: int = 30 * 24 * 3600  # history records: a re-import within it is a no-op
    # history import: rows sorted in memory at once; more go to sorted runs in a temporary folder
    import_sort_rows: int = 500_000
    # Events older than this are refused at the edge (`ts_too_old`): the real-time path is for
    # what happens now; history goes through `storepulse import`.
    max_event_age_s: int = 7 * 24 * 3600
    # Retention of the streams that name members (contracts/topic_configs.py RETENTION_DAYS):
    # an erased member's id ages out of them after this many days.
    retention_member_events_days: float = 7.0
    retention_derived_events_days: float = 7.0
    retention_decisions_days: float = 90.0
    retention_deliveries_days: float = 90.0
    idempotency_ttl_s: int = 7 * 24 * 3600
    # After Redis lost its data, delivery marks are rebuilt from this much of `deliveries`
    # (replays come from uncommitted offsets: seconds to minutes old), and a rebuild that has not
    # finished within `rebuild_timeout_s` is started again.
    rebuild_marks_s: int = 24 * 3600
    rebuild_timeout_s: float = 1800.0
    # A delivery claim older than this was left by a crashed worker and is taken over; keep it
    # above the slowest single webhook attempt (its timeout).
    claim_timeout_s: float = 10.0
    # Processes a large backtest folds its partitions in (at most the machine's cores; niced).
    backtest_processes: int = 4
    backtest_parallel_from: int = 20_000  # records in the window: below, one process (start-up)
    # Actions being delivered at once per worker (each channel keeps its own rate limit). More
    # means more throughput to slow gateways, but a SIGKILL can then leave that many actions sent
    # and not yet marked, re-sent by the next owner with the same Idempotency-Key (rebalance-kill:
    # 24 at 256). Raise it for gateways that honour the key.
    dispatch_in_flight: int = 1
    # Records handed to agents per poll: must stay under a fifth of faust's 4096-record agent buffer
    # (see app.py), or a slow agent can hold up the others again.
    max_poll_records: int = 500
    timezone: str = "Asia/Shanghai"
    # Messages per member per channel across all triggers: channel:per_day/per_week, ...
    frequency_caps: str = "push:3/10,sms:1/3,wechat:2/6,email:1/5"
    timer_interval_s: float = 1.0
    # Timer events sent per tick at most: a backlog whose visits all end at once (replay after an
    # outage, a bulk load) then spreads over ticks instead of stalling live events behind it.
    timer_max_per_tick: int = 200
    session_timeout_s: float = 10.0
    # An assigned partition with records waiting that does not move for this long is stalled
    # (partition_watch): reported on /health and repaired.
    stall_after_s: float = 30.0
    log_level: str = "info"
    # How long the producer waits to fill a batch. Every produce request costs a socket write
    # here and a request on the broker; at 1 ms most requests carried one or two records.
    producer_linger_ms: int = 1
    # Bytes per partition the producer gathers into one request. aiokafka makes a send wait while
    # its partition's batch is full until that batch is on the broker: at faust's 16 KiB, a few
    # batch records (a member-events record of 50 events is ~15 KiB) meant a broker round trip
    # each. Kept under the broker's default message.max.bytes (1 MiB).
    producer_max_batch_bytes: int = 512 * 1024
    # Analytics streams the member agent writes besides actions; each costs a produce per record
    # (about a fifth of a worker's time in `make bench`). Empty: actions only.
    analytics_topics: str = "derived-events,decisions"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f.name.upper()
            if isinstance(f.default, bool):
                values[f.name] = _bool(name, f.default, env)
            elif isinstance(f.default, float):
                values[f.name] = _float(name, f.default, env)
            elif isinstance(f.default, int):
                values[f.name] = _int(name, f.default, env, minimum=1 if name != "WEB_PORT" else 0)
            else:
                values[f.name] = _env(name, str(f.default), env)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.processing_guarantee not in _PROCESSING_GUARANTEES:
            raise SettingsError(
                f"STOREPULSE_PROCESSING_GUARANTEE={self.processing_guarantee!r}: only "
                "at_least_once is supported. exactly_once (Kafka transactions) is not: the "
                "batch path writes state and outputs through the producer directly, outside "
                "faust's per-partition transactions, and effects outside Kafka are made "
                "once by Redis claims (docs/reliability.md)"
            )
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(f"REDIS_URL={self.redis_url!r} must start with redis://")
        if not self.kafka_bootstrap or " " in self.kafka_bootstrap:
            raise SettingsError(f"KAFKA_BOOTSTRAP={self.kafka_bootstrap!r} must be host:port[,...]")
        parse_caps(self.frequency_caps)
        if self.log_level not in ("crit", "error", "warn", "info", "debug"):
            raise SettingsError(
                f"STOREPULSE_LOG_LEVEL={self.log_level!r}: use crit, error, warn, info or debug"
            )
        unknown = set(self.analytics) - {"derived-events", "decisions"}
        if unknown:
            raise SettingsError(
                f"STOREPULSE_ANALYTICS_TOPICS: unknown {sorted(unknown)}; "
                "use derived-events, decisions, both (comma-separated) or nothing"
            )
        if len(self.hash_secret) < 16:
            raise SettingsError("STOREPULSE_HASH_SECRET must be at least 16 characters")
        if self.kafka_security_protocol not in _SECURITY_PROTOCOLS:
            raise SettingsError(
                f"STOREPULSE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol!r}: "
                f"use one of {', '.join(_SECURITY_PROTOCOLS)}"
            )
        if self.kafka_security_protocol.startswith("SASL"):
            if self.kafka_sasl_mechanism not in _SASL_MECHANISMS:
                raise SettingsError(
                    f"STOREPULSE_KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r}: "
                    f"use one of {', '.join(_SASL_MECHANISMS)}"
                )
            if not (self.kafka_sasl_username and self.kafka_sasl_password):
                raise SettingsError(
                    "STOREPULSE_KAFKA_SASL_USERNAME and STOREPULSE_KAFKA_SASL_PASSWORD are "
                    f"required with STOREPULSE_KAFKA_SECURITY_PROTOCOL="
                    f"{self.kafka_security_protocol}"
                )
        for entry in filter(None, (e.strip() for e in self.extra_fields.split(","))):
            if entry.count(":") != 1 or not all(entry.split(":")):
                raise SettingsError(f"STOREPULSE_EXTRA_FIELDS: {entry!r} is not topic:field")

    def default_secrets(self) -> list[str]:
        """Names of the secrets still at the values printed in the source."""
        found = []
        if self.api_token == DEFAULT_API_TOKEN and not self.api_keys_file:
            found.append("STOREPULSE_API_TOKEN")
        if self.hash_secret == DEFAULT_HASH_SECRET:
            found.append("STOREPULSE_HASH_SECRET")
        return found

    @property
    def retention_days(self) -> dict[str, float]:
        return {
            "member-events": self.retention_member_events_days,
            "derived-events": self.retention_derived_events_days,
            "decisions": self.retention_decisions_days,
            "deliveries": self.retention_deliveries_days,
        }

    @property
    def public_base_url(self) -> str:
        return (
            self.public_url or f"http://{self.advertised_host or self.web_host}:{self.web_port}"
        ).rstrip("/")

    @property
    def loopback_only(self) -> bool:
        """True when the web server, Kafka and Redis are all on this machine's loopback."""
        hosts = [self.web_host, self.advertised_host or self.web_host]
        hosts += [hp.rsplit(":", 1)[0] for hp in self.kafka_bootstrap.split(",")]
        redis_host = self.redis_url.split("://", 1)[-1].split("@")[-1].split("/")[0]
        if not self.redis_url.startswith("unix://"):
            hosts.append(redis_host.rsplit(":", 1)[0] if ":" in redis_host else redis_host)
        return all(h.startswith(_LOOPBACK) for h in hosts)

    def extra_fields_for(self, topic: str) -> frozenset[str]:
        """Undeclared input fields that `topic` keeps (STOREPULSE_EXTRA_FIELDS)."""
        pairs = (e.strip().split(":") for e in self.extra_fields.split(",") if e.strip())
        return frozenset(field for t, field in pairs if t == topic)

    @property
    def analytics(self) -> frozenset[str]:
        return frozenset(filter(None, (t.strip() for t in self.analytics_topics.split(","))))

    def kafka(self) -> dict[str, Any]:
        """aiokafka client arguments: bootstrap servers plus TLS and SASL, as configured."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password
        if self.kafka_security_protocol.endswith("SSL"):
            options["ssl_context"] = self.kafka_ssl_context()
        return options

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        if not self.kafka_security_protocol.endswith("SSL"):
            return None
        context = ssl.create_default_context(cafile=self.kafka_ssl_cafile or None)
        if self.kafka_ssl_certfile:
            context.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile or None)
        return context

    @property
    def broker_url(self) -> str:
        return ",".join(f"kafka://{hp}" for hp in self.kafka_bootstrap.split(","))


KafkaTarget = str | Mapping[str, Any]


def kafka_options(kafka: KafkaTarget) -> dict[str, Any]:
    """aiokafka client arguments from `Settings.kafka()` or a plain bootstrap string."""
    return {"bootstrap_servers": kafka} if isinstance(kafka, str) else dict(kafka)
