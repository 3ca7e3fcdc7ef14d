"""OneID: one member id across member id, card, phone, OpenID, app device and MAC, in Redis.

Keys: `sp:id:{<kind>:<value>}` -> member id, one per identifier (phone and MAC values are keyed
hashes; raw ones never reach Redis). Linking is `SET NX`: the first binding of an identifier wins,
and a later attempt to bind it to another member is a conflict for a person to look at, never a
silent re-pointing of someone's history.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from core.settings import Settings
from state.redis_store import as_bytes, key, queue_release

Identifier = tuple[str, str]  # (kind, value); value already hashed for hashed kinds

# Trust order: the first identifier that resolves names the member.
TRUST_ORDER = ("member_id", "member_card", "phone", "openid", "app_device_id", "mac")
RANDOM_MAC = "mac_random"  # locally administered: rotates, never linked to anyone
HASHED_KINDS = frozenset({"phone", "mac", RANDOM_MAC})  # their values are keyed hashes


def normalize_mac(mac: str) -> str:
    return re.sub(r"[^0-9a-f]", "", mac.lower())


def is_randomized_mac(normalized: str) -> bool:
    """The locally-administered bit (0x02 of the first octet) marks a rotating, random MAC."""
    return bool(int(normalized[:2], 16) & 0x02)


def normalize_phone(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    if len(digits) == 13 and digits.startswith("86"):  # +86 country code for CN mobiles
        digits = digits[2:]
    return digits


def keyed_hash(secret: str, kind: str, value: str) -> str:
    """HMAC-SHA256 of a personal identifier: stable for joins, useless without the secret."""
    digest = hmac.new(secret.encode(), f"{kind}:{value}".encode(), hashlib.sha256)
    return "h" + digest.hexdigest()[:32]


def identifiers_of(fields: dict[str, str | None], secret: str) -> list[Identifier]:
    """The event's identifiers in trust order, with phones and MACs replaced by keyed hashes."""
    found: list[Identifier] = []
    for kind in TRUST_ORDER:
        value = fields.get(kind)
        if not value:
            continue
        if kind == "phone":
            found.append((kind, keyed_hash(secret, kind, normalize_phone(value))))
        elif kind == "mac":
            mac = normalize_mac(value)
            found.append(
                (RANDOM_MAC if is_randomized_mac(mac) else kind, keyed_hash(secret, "mac", mac))
            )
        else:
            found.append((kind, value))
    return found


def anonymous_id(kind: str, value: str) -> str:
    """A stable id for a visitor we cannot name yet: the same device always maps to it."""
    return "anon-" + hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:20]


def is_anonymous(member_id: str) -> bool:
    return member_id.startswith(("anon-", "guest-"))


@dataclass(frozen=True)
class Resolution:
    member_id: str
    bound: dict[Identifier, str]  # identifiers already bound, and to whom


@dataclass
class IdentityResolver:
    """Resolves and links through Redis, with a short in-process cache of lookups.

    Positive lookups are cached for `ttl_s` (a binding never changes, only new ones appear);
    misses only for `miss_ttl_s`, so a link made by another worker takes effect within seconds.
    """

    redis: aioredis.Redis
    settings: Settings
    ttl_s: float = 300.0
    miss_ttl_s: float = 2.0
    max_entries: int = 200_000
    _cache: dict[Identifier, tuple[str | None, float]] = field(default_factory=dict)

    def _redis_key(self, ident: Identifier) -> str:
        return key(self.settings, "id", f"{ident[0]}:{ident[1]}")

    def lookups(self, idents: list[Identifier]) -> list[Identifier]:
        """The identifiers `resolve` looks up for an event (member ids and random MACs never)."""
        return [i for i in idents if i[0] not in ("member_id", RANDOM_MAC)]

    def uncached(self, idents: list[Identifier], now: float) -> list[Identifier]:
        """Those of `idents` the cache cannot answer at `now` (time.monotonic())."""
        out = []
        for ident in idents:
            cached = self._cache.get(ident)
            if cached is None or cached[1] <= now:
                out.append(ident)
        return out

    def forget(self) -> None:
        """Drop every cached lookup (an identifier was unbound or erased)."""
        self._cache.clear()

    def redis_keys(self, idents: list[Identifier]) -> list[str]:
        return [self._redis_key(i) for i in idents]

    def learn(self, idents: list[Identifier], values: list[Any], now: float) -> None:
        """Cache the replies of an MGET of `redis_keys(idents)` (a batch's one round trip)."""
        if len(self._cache) > self.max_entries:
            self._cache.clear()  # crude but bounded; a real LRU is not worth it here
        for ident, value in zip(idents, values, strict=True):
            member = as_bytes(value).decode() if value is not None else None
            self._cache[ident] = (member, now + (self.ttl_s if member else self.miss_ttl_s))

    def resolve_cached(self, idents: list[Identifier]) -> Resolution:
        """`resolve` from the cache alone: after `learn` for the batch's identifiers. An entry
        that expired meanwhile counts as unbound (the link step then asks Redis with SET NX)."""
        bound: dict[Identifier, str] = {}
        for ident in self.lookups(idents):
            cached = self._cache.get(ident)
            if cached is not None and cached[0] is not None:
                bound[ident] = cached[0]
        return self._name(idents, bound)

    def _name(self, idents: list[Identifier], bound: dict[Identifier, str]) -> Resolution:
        for kind, value in idents:
            if kind == "member_id":
                return Resolution(value, bound)
            if (kind, value) in bound:
                return Resolution(bound[(kind, value)], bound)
        kind, value = idents[0]
        return Resolution(anonymous_id(kind, value), bound)

    def unbound(self, idents: list[Identifier], bound: dict[Identifier, str]) -> list[Identifier]:
        """The event's identifiers a link would bind: not yet bound to anyone (as far as the
        batch's lookups know). Most identifying events have none: nothing to ask Redis."""
        return [i for i in idents if i[0] not in ("member_id", RANDOM_MAC) and bound.get(i) is None]

    def queue_links(
        self, pipe: Any, member_id: str, idents: list[Identifier], bound: dict[Identifier, str]
    ) -> list[Identifier]:
        """Queue SET NX GET for the identifiers `link` may bind; returns them (in reply order)."""
        tried = self.unbound(idents, bound)
        for ident in tried:
            pipe.set(self._redis_key(ident), member_id.encode(), nx=True, get=True)
        return tried

    def release_links(
        self, pipe: Any, member_id: str, tried: list[Identifier], replies: list[Any]
    ) -> None:
        """Queue the undoing of the bindings `queue_links` made (on a data set found lost)."""
        for ident, previous in zip(tried, replies, strict=False):
            if previous is None:
                queue_release(pipe, self._redis_key(ident), member_id.encode())

    def read_links(
        self,
        member_id: str,
        idents: list[Identifier],
        bound: dict[Identifier, str],
        tried: list[Identifier],
        replies: list[Any],
    ) -> tuple[list[Identifier], list[tuple[Identifier, str]]]:
        """(new links, conflicts) from the replies of `queue_links`; the cache learns them."""
        owners = dict(bound)
        new: list[Identifier] = []
        now = time.monotonic()
        for ident, previous in zip(tried, replies, strict=True):
            owner = as_bytes(previous).decode() if previous is not None else None
            if owner is None:
                new.append(ident)
                owner = member_id
            owners[ident] = owner
            self._cache[ident] = (owner, now + self.ttl_s)
        conflicts = [
            (i, owners[i])
            for i in idents
            if i[0] not in ("member_id", RANDOM_MAC) and owners.get(i, member_id) != member_id
        ]
        return new, conflicts
