"""The forwarding mark of member routes (web/routing.py): what a worker signs is what the owner
checks on the forwarded request, and nothing a client can write without the key passes."""

from __future__ import annotations

import hashlib
from typing import Any

from yarl import URL

from core.settings import Settings
from web.routing import FORWARDED, forward_target, forwarded_by_a_worker, forwarding_mark


class Arrived:
    """The parts of a request `forwarded_by_a_worker` reads, as the owner receives it."""

    def __init__(self, method: str, url: URL, headers: dict[str, str]) -> None:
        self.method, self.headers = method, headers
        self.rel_url = URL(url.raw_path_qs, encoded=True)


def settings(secret: str = "a-deployment-secret-0123") -> Any:
    return Settings.from_env({"STOREPULSE_HASH_SECRET": secret})


def test_the_owner_accepts_the_mark_of_the_forwarded_path_and_query():
    s = settings()
    owner = URL("http://10.0.0.2:6067")
    for raw in (
        "http://10.0.0.1:6066/members/m-000123",
        "http://10.0.0.1:6066/members/m%20x%2Fy/decisions?trigger=t-1&since=24h",
        "http://10.0.0.1:6066/members/%E4%BC%9A%E5%91%98-1/export",
    ):
        url = URL(raw, encoded=True)
        mark = forwarding_mark(s, "GET", url.path_qs)  # as the first worker signs it
        arrived = Arrived("GET", forward_target(url, owner), {FORWARDED: mark})
        assert forwarded_by_a_worker(s, arrived), raw
        assert forward_target(url, owner).host == "10.0.0.2"


def test_no_mark_a_guessed_one_or_another_requests_mark_passes():
    s = settings()
    url = URL("http://10.0.0.2:6067/members/m-1/export")
    path = url.path_qs
    plain = hashlib.sha256(f"GET {path}".encode()).hexdigest()  # no key
    for headers in (
        {},
        {FORWARDED: "1"},
        {FORWARDED: "\xe9t\xe9"},  # not ASCII: refused, not an exception
        {FORWARDED: plain},
        {FORWARDED: forwarding_mark(s, "DELETE", path)},  # the mark of another method
        {FORWARDED: forwarding_mark(s, "GET", "/members/m-2/export")},  # of another member
        {FORWARDED: forwarding_mark(settings("another-deployment-9876"), "GET", path)},
    ):
        assert not forwarded_by_a_worker(s, Arrived("GET", url, headers)), headers
