"""Edge agents: validate, de-duplicate, hash personal identifiers, resolve the member, forward.

Every consumed record ends in exactly one place: member-events (forwarded), dead-letter (with a
reason), or dropped as a duplicate (counted). Raw phones and MACs never leave this module.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson

from agents.supervisor import supervised
from app import current
from contracts.batches import pack_chunks
from contracts.inputs import IDENTIFIER_FIELDS, InputEvent
from core.metrics import (
    DUPLICATES,
    EVENTS_FORWARDED,
    EVENTS_IN,
    IDENTITY_CONFLICTS,
    IDENTITY_LINKS,
    IDENTITY_UNBINDS,
    INPUT_TOMBSTONES,
    STORE_EVENTS,
    STORE_LAST_EVENT,
)
from edge.canonical import canonical, event_type
from edge.dead_letters import dead_letter
from edge.validation import Accepted, Item, Limits, Policy, validate_record
from faust_ext.batch_io import produce
from state import coupons, epoch, member_data
from state.dedup import queue_first_seen, was_first
from state.feeds import queue_feeds, store_label
from state.identity import (
    RANDOM_MAC,
    Identifier,
    IdentityResolver,
    anonymous_id,
    identifiers_of,
    is_anonymous,
)
from state.loyalty import load_loyalty
from state.member_data import generation_key, queue_index
from state.redis_store import redis_client, with_redis
from state.stores import FEEDS, accepts_unknown_stores, load_stores
from state.timers import partition_of
from topics import (
    INPUT_TOPICS,
    Binding,
    IdentityConflict,
    identity_audit_topic,
    topic_name,
)

app, settings = current()

logger = logging.getLogger("storepulse.ingest")


def now_ms() -> int:
    return int(time.time() * 1000)


def links_identity(topic: str, event: InputEvent, member_id: str) -> bool:
    """Which events may bind identifiers to a member: those where the member proved who they are."""
    if is_anonymous(member_id):
        return False
    if topic == "wifi":
        return event.kind == "portal_login"
    return topic in ("checkins", "beacons", "pos", "identity")


@dataclass
class Candidate:
    """An accepted event of the batch, where it came from, and its identifiers."""

    partition: int
    offset: int
    key: bytes | None
    item: Item
    event: InputEvent
    position: str  # partition:offset[:index], the de-duplication position
    idents: list[Identifier]
    owners: dict[str, str] | None = None  # coupon code -> the member it was issued to


Record = tuple[int, int, bytes | None, bytes | None]  # partition, offset, key, value
# Events per Redis round trip and per member-events record at most: a backlog's window can hold
# 1,000 records of 500 events each, which must not become one pipeline or one record.
FORWARD_CHUNK = 1000


class Ingest:
    """The per-batch pipeline; one instance per worker process."""

    def __init__(self) -> None:
        self.redis = redis_client(settings)
        self.resolver = IdentityResolver(self.redis, settings)
        self.limits = Limits(
            settings.max_message_bytes, settings.max_batch_events, settings.max_batch_bytes
        )
        # parsed once: per record this was a split of STOREPULSE_EXTRA_FIELDS
        self.extra_fields = {t: settings.extra_fields_for(t) for t in INPUT_TOPICS}
        self.member_events = topic_name("member-events")
        self.bindings = topic_name("identity-bindings")
        self.generation = generation_key(settings)
        self.identity_audit = topic_name("identity-audit")
        self.seen_generation: Any = None
        self.epoch = epoch.shared(settings)
        self.stores = load_stores(settings.stores_path)
        self.prefixes = coupons.pools_by_prefix(coupons.load_pools(settings.coupons_path))
        loyalty = load_loyalty(settings.loyalty_path)
        self.policy = Policy(
            max_past_ms=settings.max_event_age_s * 1000,
            stores=None if accepts_unknown_stores(settings.stores_path) else frozenset(self.stores),
            currency=loyalty.currency,
            rates=tuple(sorted(loyalty.exchange_rates.items())),
        )
        self.last_seen: dict[tuple[str, str], int] = {}
        for store in self.stores.values():
            for source in store.feeds:  # never seen: silent from the first opening hour on
                STORE_LAST_EVENT.labels(store.id, source).set(0)

    async def batch(self, topic: str, records: list[Record]) -> None:
        """Records fetched together: validate every event, one Redis round trip for their
        de-duplication and identities, one member-events record per destination partition.

        Every event ends in one place: forwarded, dead-lettered with its index, or counted as a
        duplicate. An exception in one event's handling dead-letters that event only."""
        candidates: list[Candidate] = []
        now = now_ms()
        extra = self.extra_fields.get(topic, frozenset())
        events_in = 0
        for partition, offset, key, value in records:
            if value is None and topic == "members":  # an erased member's profile: no event
                INPUT_TOMBSTONES.labels(topic).inc()
                continue
            for item in validate_record(
                topic, value, now, self.limits, extra, settings.hash_secret, self.policy
            ):
                events_in += 1
                result = item.result
                if isinstance(result, Accepted):
                    event = result.event
                    position = f"{partition}:{offset}" + (
                        f":{item.index}" if item.index is not None else ""
                    )
                    fields = {f: getattr(event, f, None) for f in IDENTIFIER_FIELDS}
                    idents = identifiers_of(fields, settings.hash_secret)
                    candidates.append(
                        Candidate(partition, offset, key, item, event, position, idents)
                    )
                else:
                    await dead_letter(
                        topic,
                        partition,
                        offset,
                        key,
                        item.raw,
                        result.reason,
                        result.message,
                        item.index,
                    )
        EVENTS_IN.labels(topic).inc(events_in)
        if not candidates:
            return
        feeds = self._feeds(topic, candidates)
        for lo in range(0, len(candidates), FORWARD_CHUNK):
            await self._forward(topic, candidates[lo : lo + FORWARD_CHUNK], feeds if not lo else {})

    def _feeds(
        self, topic: str, candidates: list[Candidate]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """(store, source) -> (events, latest event time) of a batch, for store feed health."""
        if topic not in FEEDS:
            return {}
        seen: dict[tuple[str, str], tuple[int, int]] = {}
        for c in candidates:
            label = store_label(getattr(c.event, "store_id", None), self.stores)
            count, last = seen.get((label, topic), (0, 0))
            seen[(label, topic)] = (count + 1, max(last, c.event.ts))
        for key, (count, last) in seen.items():
            STORE_EVENTS.labels(*key).inc(count)
            if last > self.last_seen.get(key, 0):
                self.last_seen[key] = last
                STORE_LAST_EVENT.labels(*key).set(last / 1000)
        return seen

    async def _forward(
        self,
        topic: str,
        candidates: list[Candidate],
        feeds: dict[tuple[str, str], tuple[int, int]],
    ) -> None:
        """One Redis round trip for the chunk, then its member-events records."""
        fresh = await self._lookups(topic, candidates, feeds)
        out: dict[int, list[dict[str, Any]]] = {}
        forwarded: Counter[str] = Counter()
        duplicates = 0
        for candidate, is_fresh in zip(candidates, fresh, strict=True):
            if not is_fresh:
                duplicates += 1
                continue
            try:
                await self._route(topic, candidate, out)
                forwarded[event_type(topic, candidate.event.kind)] += 1
            except Exception as exc:  # this event only: its neighbours in the batch go on
                logger.exception(
                    "ingest failed on %s[%d]@%s", topic, candidate.partition, candidate.position
                )
                await dead_letter(
                    topic,
                    candidate.partition,
                    candidate.offset,
                    candidate.key,
                    candidate.item.raw,
                    "internal",
                    f"ingest: {type(exc).__name__} in StorePulse; see the worker log at this "
                    "offset",
                    candidate.item.index,
                )
        for partition, events in out.items():
            for value in pack_chunks("events", events):
                await produce(app, self.member_events, value, partition)
        if duplicates:
            DUPLICATES.labels(topic).inc(duplicates)
        for kind, n in forwarded.items():
            EVENTS_FORWARDED.labels(topic, kind).inc(n)

    async def _lookups(
        self,
        topic: str,
        candidates: list[Candidate],
        feeds: dict[tuple[str, str], tuple[int, int]] | None = None,
    ) -> list[bool]:
        """One pipeline: SET NX GET of every event's de-duplication key, MGET of the identifiers
        the cache cannot answer, who the coupon codes the batch's sales name were issued to, the
        feeds' latest events, and the identity generation (an unbinding or an erasure anywhere
        empties the cache and runs the lookups again), on the data set this worker knows
        (state/epoch.py). Re-run whole after a Redis error or a rebuild (both are idempotent)."""
        now = time.monotonic()
        wanted: dict[Identifier, None] = {}
        for c in candidates:
            for ident in self.resolver.lookups(c.idents):
                wanted[ident] = None
        missing = self.resolver.uncached(list(wanted), now)
        # codes named by sales: who they were issued to (another member, or a guest's sale)
        redeemed = sorted(
            {code for c in candidates for code in getattr(c.event, "coupons", None) or ()}
        )
        asked: list[str] = []

        def build(pipe: Any) -> None:
            for c in candidates:
                queue_first_seen(
                    pipe,
                    settings,
                    topic,
                    c.event.event_id,
                    c.position,
                    settings.import_dedup_s if c.event.history else None,
                )
            if missing:
                pipe.mget(self.resolver.redis_keys(missing))
            asked[:] = coupons.queue_owners(pipe, settings, self.prefixes, redeemed)
            if feeds:  # after the replies read below
                queue_feeds(pipe, settings, feeds, now_ms())
            pipe.get(self.generation)

        replies = await self.epoch.run(build, "de-duplication and identity")
        generation = replies.pop() or b"0"
        if generation != self.seen_generation:
            # An identifier was unbound or erased somewhere: what this worker cached may name a
            # member it no longer belongs to. Forget it all and ask Redis again (rare).
            first = self.seen_generation is None  # the first batch: nothing cached yet
            self.seen_generation = generation
            if not first:
                self.resolver.forget()
                return await self._lookups(topic, candidates, feeds)
        if feeds:
            replies = replies[: len(replies) - len(feeds)]
        if asked:
            owners = coupons.read_owners(asked, replies[len(replies) - len(asked) :])
            replies = replies[: len(replies) - len(asked)]
            for c in candidates:
                mine = {
                    k: owners[k] for k in getattr(c.event, "coupons", None) or () if k in owners
                }
                c.owners = mine or None
        if missing:
            self.resolver.learn(missing, replies[-1], now)
        return [was_first(r, c.position) for r, c in zip(replies, candidates, strict=False)]

    async def _route(self, topic: str, c: Candidate, out: dict[int, list[dict[str, Any]]]) -> None:
        event, idents = c.event, c.idents
        bound: dict[Identifier, str] = {}
        if idents:
            resolution = self.resolver.resolve_cached(idents)
            member_id, bound = resolution.member_id, resolution.bound
        else:
            member_id = f"guest-{getattr(event, 'store_id', 'unknown')}"  # a sale without member
        if topic == "identity" and event.kind == "unbind":
            await self._unbind(event, member_id, idents)
        elif links_identity(topic, event, member_id):
            for handover in await self._link(topic, event, member_id, idents, bound):
                out.setdefault(partition_of(handover["member_id"], settings.partitions), []).append(
                    handover
                )
        forwarded: dict[str, Any] = dict(canonical(topic, event, member_id, idents))
        foreign = {k: v for k, v in (c.owners or {}).items() if v != member_id}
        if foreign:  # redeemed by someone else: the member agent tells the owners
            forwarded["attrs"]["coupon_owners"] = foreign
        out.setdefault(partition_of(member_id, settings.partitions), []).append(forwarded)

    async def _link(
        self,
        topic: str,
        event: InputEvent,
        member_id: str,
        idents: list[Identifier],
        bound: dict[Identifier, str],
    ) -> list[dict[str, Any]]:
        """Bind the event's unbound identifiers; returns the hand-over events for member-events."""
        tried: list[Identifier] = []

        def build(pipe: Any) -> None:
            tried[:] = self.resolver.queue_links(pipe, member_id, idents, bound)
            queue_index(pipe, settings, member_id, tried)  # erasure finds them (member_data)

        async def undo(replies: list[Any]) -> None:
            pipe = self.redis.pipeline(transaction=False)
            self.resolver.release_links(pipe, member_id, tried, replies)
            await pipe.execute()

        # a round trip only for identifiers not bound yet (once per identifier, not per event)
        replies = (
            await self.epoch.run(build, "identity link", undo)
            if self.resolver.unbound(idents, bound)
            else []
        )[: len(tried)]
        new, conflicts = self.resolver.read_links(member_id, idents, bound, tried, replies)
        at = now_ms()
        for kind, value in new:  # the source of truth of the binding (state/rebuild.py)
            binding = Binding(member_id=member_id, at=at, source=topic, event_id=event.event_id)
            await produce(
                app,
                self.bindings,
                orjson.dumps(binding),
                None,
                f"{kind}:{value}".encode(),
            )
        handovers: list[dict[str, Any]] = []
        for kind, value in new:
            IDENTITY_LINKS.labels(kind).inc()
            # The visitor may have history under its anonymous id: its partition hands it over.
            anon = anonymous_id(kind, value)
            handovers.append(
                {
                    "event_id": f"{event.event_id}:identified:{kind}",
                    "member_id": anon,
                    "type": "identified",
                    "ts": event.ts,
                    "source": topic,
                    "attrs": {"member_id": member_id},
                }
            )
        for (kind, value), owner in conflicts:
            IDENTITY_CONFLICTS.labels(topic, kind).inc()
            logger.warning(
                "identity conflict on %s: %s stays with its first member (event %s)",
                topic,
                kind,
                event.event_id,
            )
            await identity_audit_topic.send(
                key=owner,
                value=IdentityConflict(
                    event_id=event.event_id,
                    source_topic=topic,
                    identifier_kind=kind,
                    identifier=value,
                    bound_member_id=owner,
                    requested_member_id=member_id,
                    rule="first_binding_wins",
                    at=now_ms(),
                ),
            )
        return handovers

    async def _unbind(self, event: InputEvent, member_id: str, idents: list[Identifier]) -> None:
        """Unbind the event's identifiers from its member (a lost card, a reassigned phone): the
        Redis binding (only while it names this member), a tombstone on `identity-bindings` so a
        rebuild does not bring it back, and a record on `identity-audit`. After it the
        identifier resolves as new (an anonymous visitor) on every worker."""
        wanted = [i for i in idents if i[0] not in ("member_id", RANDOM_MAC)]
        removed = await with_redis(
            lambda: member_data.unbind(self.redis, settings, member_id, wanted), "unbind"
        )
        self.resolver.forget()
        for kind, value in wanted:
            done = (kind, value) in removed
            if done:
                await produce(app, self.bindings, None, None, f"{kind}:{value}".encode())
            IDENTITY_UNBINDS.labels(kind, "unbound" if done else "not_bound").inc()
            audit = {
                "change": "unbind",
                "event_id": event.event_id,
                "identifier_kind": kind,
                "identifier": value,
                "member_id": member_id,
                "outcome": "unbound" if done else "not_bound_to_member",
                "by": str(getattr(event, "by", None) or "identity topic")[:64],
                "at": now_ms(),
            }
            await produce(app, self.identity_audit, orjson.dumps(audit), None, member_id.encode())


_ingest: Ingest | None = None


def _pipeline() -> Ingest:
    global _ingest
    if _ingest is None:
        _ingest = Ingest()
    return _ingest


def _make_ingest_agent(source: str, topic: faust.TopicT) -> None:
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        pipeline = _pipeline()
        window = settings.batch_window_ms / 1000
        taking = cast(Any, stream).take_events  # on faust's Stream, not on its StreamT
        async for events in taking(settings.batch_max_records, within=window):
            records = [
                (e.message.partition, e.message.offset, e.message.key, e.message.value)
                for e in events
            ]
            try:
                await pipeline.batch(source, records)
            except Exception:  # a bug must not stop the stream: each record alone, then
                logger.exception("ingest failed on a batch of %d %s records", len(records), source)
                for record in records:
                    await _alone(pipeline, source, record)

    ingest.__name__ = ingest.__qualname__ = f"ingest_{source}"
    app.agent(topic, name=f"storepulse.ingest.{source}")(supervised(f"ingest.{source}")(ingest))


async def _alone(pipeline: Ingest, source: str, record: Record) -> None:
    """One record of a failed batch on its own: a record that fails alone is dead-lettered
    (never lost); the rest go on (a replayed event is recognised by its member)."""
    partition, offset, key, value = record
    try:
        await pipeline.batch(source, [record])
    except Exception as exc:
        logger.exception("ingest failed on %s[%d]@%d", source, partition, offset)
        await dead_letter(
            source,
            partition,
            offset,
            key,
            value,
            "internal",
            f"ingest: {type(exc).__name__} in StorePulse; see the worker log at this offset",
        )


for _name, _topic in INPUT_TOPICS.items():
    _make_ingest_agent(_name, _topic)
