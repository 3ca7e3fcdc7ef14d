"""Who is calling and what they may do: `Authorization: Bearer KEY`, named keys with roles
(web/keys.py), checked before anything else runs on every page except liveness."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from faust.web import Request, Response, View

from core.settings import DEFAULT_API_TOKEN, Settings
from web.keys import Keys, Principal, Role

UNAUTHORIZED = {"error": "missing or wrong API key (send the header Authorization: Bearer KEY)"}
Handler = Callable[..., Awaitable[Response]]
_keys: dict[int, Keys] = {}


def keys_of(settings: Settings) -> Keys:
    """The process's keys for these settings: the keys file, plus STOREPULSE_API_TOKEN as the
    `admin` key `token` (not the source's default once a keys file is in use)."""
    keys = _keys.get(id(settings))
    if keys is None:
        path = Path(settings.api_keys_file) if settings.api_keys_file else None
        token = settings.api_token
        if path is not None and token == DEFAULT_API_TOKEN:
            token = ""
        keys = _keys[id(settings)] = Keys(path, token or None)
    return keys


def principal_of(request: Request, settings: Settings) -> Principal | None:
    header = request.headers.get("Authorization", "")
    return keys_of(settings).principal(header.removeprefix("Bearer ").strip())


def require(settings: Settings, role: Role) -> Callable[[Handler], Handler]:
    """Refuse with 401 (no or unknown key) or 403 (a role below `role`) before the handler runs,
    forwarding to another worker included (put it above `web.routing.member_route`). The
    handler finds the caller in `request["principal"]`."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            who = principal_of(request, settings)
            if who is None:
                return view.json(UNAUTHORIZED, status=401)
            if not who.may(role):
                return view.json(
                    {"error": f"the key {who.name!r} is a {who.role}; this needs {role} or above"},
                    status=403,
                )
            request["principal"] = who  # type: ignore[index]
            return await handler(view, request, *args, **kwargs)

        return checked

    return wrap


def caller(request: Request) -> Principal:
    return request["principal"]  # type: ignore[index]
