"""Member routes answered by the worker that owns the member's partition.

A member's events, record and timer are on the partition of the bare member id
(`state.timers.partition_of`: the producer's partitioner on the `member-events` key). faust's
`app.table_route` picks the worker from the partition of the key *as the table's changelog
serialises it*, JSON with its quotes (`"m-1"`), a different partition for most ids: with two
workers about half of the member lookups went to the worker without the member and answered 404
(tests/integration/test_two_workers_lookup.py). It also forwards a request without its body, so
an `/explain` reached the owner empty. `member_route` routes by the
member's own partition and forwards the body; a request forwarded once is answered where it
lands (two workers in the middle of a rebalance may disagree about the owner for a moment).
The forwarding mark is signed with a key only workers hold (derived from STOREPULSE_HASH_SECRET,
which every worker of a deployment shares): a client that sets the header itself is routed like
any request, so it cannot make a worker without the member answer an export or an erasure from
an empty store.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import faust
from faust.web import Request, Response, View
from yarl import URL

from core.settings import Settings
from state.timers import partition_of
from web.auth import Handler

FORWARDED = "X-StorePulse-Forwarded"
_DROPPED = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def forwarding_mark(settings: Settings, method: str, path_qs: str) -> str:
    """The header value a worker forwards `method path_qs` with (keyed, so clients cannot)."""
    key = hashlib.sha256(b"storepulse-forwarded\x1f" + settings.hash_secret.encode()).digest()
    return hmac.new(key, f"{method} {path_qs}".encode(), hashlib.sha256).hexdigest()


def forwarded_by_a_worker(settings: Settings, request: Request) -> bool:
    mark = request.headers.get(FORWARDED)
    if not mark:
        return False
    expected = forwarding_mark(settings, request.method, request.rel_url.path_qs)
    # as bytes: compare_digest refuses str with non-ASCII characters, which a client can send
    return hmac.compare_digest(mark.encode("utf-8", "surrogateescape"), expected.encode())


def forward_target(url: URL, owner: URL) -> URL:
    """`url` on the owner's host and port; its path and query unchanged (the mark signs them)."""
    return url.with_scheme(owner.scheme).with_host(str(owner.host)).with_port(owner.port)


def owner_of(app: faust.App, table: Any, partition: int) -> URL | None:
    """The web address of the worker whose table partition `partition` is active, if known."""
    topic = table.changelog_topic.get_topic_name()
    for host, topics in app.router.table_metadata(table.name).items():
        if partition in topics.get(topic, ()):
            return URL(host)
    return None


def member_route(app: faust.App, settings: Settings, table: Any) -> Callable[[Handler], Handler]:
    """Run the handler on the worker that owns `{member_id}`'s partition of `table`."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def routed(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            if forwarded_by_a_worker(settings, request):
                return await handler(view, request, *args, **kwargs)
            member_id = request.match_info["member_id"]
            owner = owner_of(app, table, partition_of(member_id, settings.partitions))
            if owner is None:
                return view.json(
                    {"error": "the member's partition is being assigned to a worker; retry"},
                    status=503,
                )
            here = URL(str(app.conf.canonical_url))
            if (owner.host, owner.port) == (here.host, here.port):
                return await handler(view, request, *args, **kwargs)
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in _DROPPED and k.lower() != FORWARDED.lower()
            }
            headers[FORWARDED] = forwarding_mark(settings, request.method, request.rel_url.path_qs)
            async with app.http_client.request(
                method=request.method,
                url=forward_target(request.url, owner),
                headers=headers,
                data=await request.read(),
            ) as answer:
                return view.text(
                    await answer.text(), content_type=answer.content_type, status=answer.status
                )

        return routed

    return wrap
