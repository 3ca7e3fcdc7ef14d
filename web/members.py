"""Member data rights over HTTP: look a member up, erase them, change one channel's consent,
unbind an identifier, and the signed unsubscribe link members follow without any key.

Every change travels the way events do: onto the member's partition of `member-events` (the
member agent applies it in order with everything else the member does), with Redis and the
compacted topics cleaned here, and a record of who asked on `member-audit` (members named by a
keyed hash there). Erasure and unbinding need the `admin` role, consent changes `editor`.
"""

from __future__ import annotations

import asyncio
import html
import time
import uuid
from typing import Any

import orjson
from faust.web import Request, Response, View

from app import current
from contracts.batches import pack_chunks
from core.metrics import MEMBER_DATA_CHANGES
from faust_ext.batch_io import produce
from state import member_data
from state.coupons import load_pools
from state.identity import HASHED_KINDS
from state.member_state import CHANNELS
from state.members import member_state_table, member_timers_table
from state.redis_store import key, redis_client, with_redis
from state.timers import partition_of
from topics import MEMBER_AUDIT_TOPIC, CouponCode, MemberAudit, topic_name
from web.api import on_member_worker
from web.auth import caller, require

app, settings = current()

require_viewer = require(settings, "viewer")
require_editor = require(settings, "editor")
require_admin = require(settings, "admin")
IDENTIFIER_KINDS = ("member_card", "phone", "openid", "app_device_id", "mac")


def now_ms() -> int:
    return int(time.time() * 1000)


async def to_member(member_id: str, event_type: str, attrs: dict[str, Any], at: int) -> Any:
    """An event for the member agent on the member's member-events partition."""
    event = {
        "event_id": f"{event_type}:{uuid.uuid4().hex}",
        "member_id": member_id,
        "type": event_type,
        "ts": at,
        "store_id": None,
        "source": "api",
        "attrs": attrs,
    }
    (value,) = pack_chunks("events", [event])
    return await produce(
        app, topic_name("member-events"), value, partition_of(member_id, settings.partitions)
    )


async def audit(change: str, member_id: str, by: str, at: int, detail: dict[str, Any]) -> Any:
    record: MemberAudit = {
        "change": change,  # type: ignore[typeddict-item]
        "member": member_data.member_hash(settings, member_id),
        "by": by,
        "at": at,
        "detail": detail,
    }
    return await produce(
        app, MEMBER_AUDIT_TOPIC, orjson.dumps(record), None, record["member"].encode()
    )


async def change_consent(
    member_id: str, channel: str, granted: bool, source: str, at: int, by: str
) -> None:
    """Recorded on member-audit, applied by the member agent at the member's next event (this
    one): the latest change by time wins (state.member_state.set_consent)."""
    written = [
        await to_member(
            member_id,
            "consent",
            {"channel": channel, "granted": granted, "source": source, "at": at},
            at,
        ),
        await audit(
            "consent",
            member_id,
            by,
            now_ms(),
            {"channel": channel, "granted": granted, "source": source, "at": at},
        ),
    ]
    await asyncio.gather(*written)
    MEMBER_DATA_CHANGES.labels("unsubscribe" if source == "unsubscribe_link" else "consent").inc()


@app.page("/members/{member_id}")
class Member(View):
    """GET (viewer): the member's state, from the worker that owns the member's partition.
    DELETE (admin): erase the member (see `erase`)."""

    @require_viewer
    @on_member_worker
    async def get(self, request: Request, member_id: str) -> Response:
        record = member_state_table.get(member_id)
        if record is None:
            return self.json({"error": f"no member {member_id!r}"}, status=404)
        timers = member_timers_table.get(member_id)
        return self.json({"member": record, "next_due": timers["due"] if timers else None})

    @require_admin
    @on_member_worker
    async def delete(self, request: Request, member_id: str) -> Response:
        report = await erase(member_id, caller(request).name)
        return self.json(report, status=202)


async def erase(member_id: str, by: str) -> dict[str, Any]:
    """Erase a member: every identifier binding in Redis (and a tombstone for each on
    `identity-bindings`), the delivery claims of the actions the record still names, a tombstone
    on the compacted `members` topic, and an `erase` event that makes the member agent tombstone
    the member's state and timer on their changelogs (decision history, caps, coupons, held
    messages are in the state), the member's codes in the coupon pools' owner hashes (their
    `coupon-codes` records rewritten with the member's keyed hash, so a rebuild still counts
    them). Runs on the worker that owns the member's partition."""
    at = now_ms()
    record = member_state_table.get(member_id) or {}
    redis = redis_client(settings)
    removed = await with_redis(lambda: member_data.erase(redis, settings, member_id), "erasure")
    pools = sorted(load_pools(settings.coupons_path))
    codes = await with_redis(
        lambda: member_data.erase_coupons(redis, settings, member_id, pools), "erasure of codes"
    )
    action_ids = sorted(
        {a["action_id"] for _, out in record.get("_recent_out") or () for a in out}
        | {entry[1] for entry in (record.get("coupons") or {}).values()}
        | {action for _, _, action in codes}
    )
    if action_ids:
        await with_redis(
            lambda: redis.delete(*[key(settings, "act", a) for a in action_ids]),
            "erasure of delivery claims",
        )
    written = [
        await produce(app, topic_name("identity-bindings"), None, None, ident.encode())
        for ident in removed
    ]
    written.append(await produce(app, topic_name("members"), None, None, member_id.encode()))
    hashed = member_data.member_hash(settings, member_id)
    for pool, code, action in codes:  # still counted by a rebuild, no longer naming the member
        kept = CouponCode(
            code=code,
            pool=pool,
            action_id=action,
            trigger_id="",
            member_id=hashed,
            channel="",
            status="reserved",
            at=at,
        )
        written.append(
            await produce(app, topic_name("coupon-codes"), orjson.dumps(kept), None, code.encode())
        )
    written.append(await to_member(member_id, "erase", {}, at))
    detail = {
        "identifiers": len(removed),
        "coupon_codes": len(codes),
        "delivery_claims": len(action_ids),
        "state": record != {},
        "members_tombstone": True,
    }
    written.append(await audit("erasure", member_id, by, at, detail))
    await asyncio.gather(*written)
    MEMBER_DATA_CHANGES.labels("erasure").inc()
    return {
        "erased": member_data.member_hash(settings, member_id),
        "at": at,
        **detail,
        "streams": {
            "note": "events naming the member in these streams age out after their retention",
            "retention_days": settings.retention_days,
        },
    }


@app.page("/members/{member_id}/export")
class Export(View):
    """GET (admin): everything StorePulse holds about the member, for a request of access or
    a copy (PIPL art. 45, GDPR art. 15 and 20): the whole member record (visits, purchases,
    points, tier, tags, consent with when and where each change came from, decisions, coupons,
    held messages, the replay guard's recent actions), the next timer, and the identifiers bound
    to them (phone numbers and MACs only as keyed hashes: the raw values are never stored).
    Audited on member-audit like an erasure; 404 when nothing is held."""

    @require_admin
    @on_member_worker
    async def get(self, request: Request, member_id: str) -> Response:
        record = member_state_table.get(member_id)
        redis = redis_client(settings)
        names = await with_redis(
            lambda: redis.smembers(member_data.index_key(settings, member_id)), "member export"
        )
        identifiers = sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)
        if record is None and not identifiers:
            return self.json({"error": f"no member {member_id!r}"}, status=404)
        at = now_ms()
        timers = member_timers_table.get(member_id)
        detail = {"identifiers": len(identifiers), "state": record is not None}
        await (await audit("export", member_id, caller(request).name, at, detail))
        MEMBER_DATA_CHANGES.labels("export").inc()
        return self.json(
            {
                "member_id": member_id,
                "exported_at": at,
                "identifiers": [
                    {"kind": kind, "value": value, "hashed": kind in HASHED_KINDS}
                    for kind, _, value in (name.partition(":") for name in identifiers)
                ],
                "state": record,
                "next_due": timers["due"] if timers else None,
                "streams": {
                    "note": "events naming the member also sit in these streams until their "
                    "retention ends; they are not part of this copy",
                    "retention_days": settings.retention_days,
                },
            }
        )


@app.page("/members/{member_id}/consent/{channel}")
class Consent(View):
    """PUT (editor) `{"granted": false, "source": "service-desk", "at": ms}` (`at` optional,
    default now): one channel's consent, honoured from the member's next event on."""

    @require_editor
    async def put(self, request: Request, member_id: str, channel: str) -> Response:
        if channel not in CHANNELS:
            return self.json(
                {"errors": [f"channel: {channel[:20]!r} is not one of {', '.join(CHANNELS)}"]},
                status=422,
            )
        try:
            body = orjson.loads(await request.read() or b"null")
        except orjson.JSONDecodeError as exc:
            return self.json({"errors": [f"request: not JSON: {exc}"]}, status=400)
        errors = []
        if not isinstance(body, dict) or not isinstance(body.get("granted"), bool):
            errors.append("granted: true or false is required")
            body = body if isinstance(body, dict) else {}
        source = body.get("source", "api")
        if not isinstance(source, str) or not 0 < len(source) <= 64:
            errors.append("source: a name of at most 64 characters (who or what changed it)")
        at = body.get("at", now_ms())
        if isinstance(at, bool) or not isinstance(at, int) or not 0 < at <= now_ms() + 300_000:
            errors.append("at: epoch milliseconds, not in the future")
        if errors:
            return self.json({"errors": errors}, status=422)
        who = caller(request).name
        await change_consent(member_id, channel, body["granted"], source, at, who)
        return self.json(
            {"member_id": member_id, "channel": channel, "granted": body["granted"], "at": at},
            status=202,
        )


@app.page("/members/{member_id}/unbind")
class Unbind(View):
    """POST (admin) `{"kind": "member_card", "value": "C-1"}`: the identifier no longer belongs
    to the member. It goes through the identity topic like any identity event (hashed there
    where the kind is hashed), and is audited on identity-audit."""

    @require_admin
    async def post(self, request: Request, member_id: str) -> Response:
        try:
            body = orjson.loads(await request.read() or b"null")
        except orjson.JSONDecodeError as exc:
            return self.json({"errors": [f"request: not JSON: {exc}"]}, status=400)
        if not isinstance(body, dict) or body.get("kind") not in IDENTIFIER_KINDS:
            return self.json(
                {"errors": [f"kind: one of {', '.join(IDENTIFIER_KINDS)}"]}, status=422
            )
        value = body.get("value")
        if not isinstance(value, str) or not value:
            return self.json(
                {"errors": ["value: the identifier, as sent by its source"]}, status=422
            )
        at = now_ms()
        event = {
            "event_id": f"unbind-{uuid.uuid4().hex[:24]}",
            "ts": at,
            "kind": "unbind",
            "member_id": member_id,
            "by": caller(request).name[:64],
            body["kind"]: value,
        }
        fut = await produce(
            app, topic_name("identity"), orjson.dumps(event), None, member_id.encode()
        )
        await fut
        MEMBER_DATA_CHANGES.labels("unbind").inc()
        return self.json(
            {"member_id": member_id, "kind": body["kind"], "event_id": event["event_id"]},
            status=202,
        )


_PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>{title}</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">{body}</body></html>"""


@app.page("/unsubscribe")
class Unsubscribe(View):
    """The link in a message (`{unsubscribe_url}`): GET shows a confirmation (link scanners
    and previews fetch GETs), POST unsubscribes the member from that channel. No API key: the
    link's signature is the proof."""

    async def get(self, request: Request) -> Response:
        m, c, s = (request.query.get(k, "") for k in ("m", "c", "s"))
        if c not in CHANNELS or not member_data.valid_unsubscribe(settings, m, c, s):
            return self._page("链接无效 / Invalid link", "<p>This link is not valid.</p>", 403)
        form = (
            f'<form method="post" action="/unsubscribe?{html.escape(request.query_string)}">'
            f"<p>退订 {html.escape(c)} 消息? / Stop {html.escape(c)} messages?</p>"
            '<button type="submit">退订 / Unsubscribe</button></form>'
        )
        return self._page("退订 / Unsubscribe", form)

    async def post(self, request: Request) -> Response:
        m, c, s = (request.query.get(k, "") for k in ("m", "c", "s"))
        if c not in CHANNELS or not member_data.valid_unsubscribe(settings, m, c, s):
            return self._page("链接无效 / Invalid link", "<p>This link is not valid.</p>", 403)
        at = now_ms()
        await change_consent(m, c, False, "unsubscribe_link", at, "unsubscribe link")
        done = f"<p>已退订 / You will get no more {html.escape(c)} messages.</p>"
        return self._page("已退订 / Unsubscribed", done)

    def _page(self, title: str, body: str, status: int = 200) -> Response:
        return self.html(_PAGE.format(title=title, body=body), status=status)
