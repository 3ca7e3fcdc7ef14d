"""Builds the faust App from settings, once per process, when an entry point asks for it.

Nothing happens at import: `build()` (called by `storepulse worker`, the benchmark and the tests
that need a worker's topics) reads the settings, installs the faust extensions and makes the App;
the modules that register agents, topics, tables and pages (`agents/`, `topics.py`,
`state/members.py`, `web/`) take it from `current()` and refuse to be imported before it.
"""

from __future__ import annotations

import faust

from core.settings import Settings
from faust_ext import install

_built: tuple[faust.App, Settings] | None = None


class AppNotBuilt(RuntimeError):
    """A module that registers on the faust App was imported before `app.build()`."""


def build(settings: Settings | None = None) -> faust.App:
    """The App of this process (made on the first call, from `settings` or the environment)."""
    global _built
    if _built is None:
        settings = settings or Settings.from_env()
        install()
        _built = (create_app(settings), settings)
    return _built[0]


def current() -> tuple[faust.App, Settings]:
    """(App, Settings) of this process; AppNotBuilt if no entry point built them yet."""
    if _built is None:
        raise AppNotBuilt(
            "StorePulse's faust App is not built: call app.build(settings) (the entry points "
            "do) before importing agents, topics, state.members or web"
        )
    return _built


def create_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=credentials(settings),
        store=settings.store_url,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        processing_guarantee=settings.processing_guarantee,
        key_serializer="raw",
        value_serializer="orjson",
        web_host=settings.web_host,
        web_port=settings.web_port,
        # Where other workers send requests for keys this worker owns (GET /members/{id}).
        canonical_url=f"http://{settings.advertised_host or settings.web_host}:{settings.web_port}",
        web_in_thread=False,
        consumer_auto_offset_reset="earliest",
        # A crashed worker's partitions move after this long (Kafka's default of 45 s is long for
        # "within seconds"); heartbeats every 1/4 of it.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 4,
        broker_commit_every=200,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        # Records per fetch handed to agents. faust pauses a partition whose agent buffer passes
        # 4/5 of stream_buffer_maxsize (4096) but still delivers the rest of the fetch, waiting
        # for room: unbounded, one fetch of actions behind a rate-limited gateway held up every
        # agent of the worker. 500 fits in the remaining fifth, so nothing waits.
        broker_max_poll_records=settings.max_poll_records,
        topic_allow_declare=True,
        autodiscover=False,
        # Stateful agents stay at concurrency 1 (faust #606); producers flush quickly for latency.
        producer_linger_ms=settings.producer_linger_ms,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        # faust's own pages would serve member records (/table/...) and the cluster layout
        # (/router/) to anyone: off. Every StorePulse page checks the API key itself (web/).
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
    )


def credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """faust's form of the Kafka security settings (the same as `Settings.kafka()`)."""
    context = settings.kafka_ssl_context()
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
