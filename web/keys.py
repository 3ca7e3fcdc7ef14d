"""Named API keys with roles, kept as SHA-256 hashes in a YAML file (never the keys themselves).

`STOREPULSE_API_KEYS_FILE`:

    keys:
      - {name: alice, role: editor, sha256: 9f86d0...}

Roles rank `viewer` < `editor` < `admin`: a viewer reads triggers, reports and members; an editor
also drafts, backtests, publishes and pauses; an admin also manages keys and member data rights.
The file is read again when it changes (checked at most once a second), so `storepulse keys
add|revoke` takes effect on running workers without a restart. `STOREPULSE_API_TOKEN` stays one
`admin` key named `token` for existing setups (unless it is the source's default and a keys file
is in use). A key's name is the author recorded in the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

Role = Literal["viewer", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")
RANK = {role: n for n, role in enumerate(ROLES)}


class KeysFileError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (the audit's author) and its role."""

    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def read_keys(path: Path) -> list[dict[str, str]]:
    """The file's entries, checked; a missing file is no keys."""
    if not path.exists():
        return []
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KeysFileError(f"{path}: cannot read API keys: {exc}") from None
    entries = raw.get("keys") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise KeysFileError(f"{path}: expected `keys:` with a list of {{name, role, sha256}}")
    out: list[dict[str, str]] = []
    names: set[str] = set()
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"name", "role", "sha256"}:
            raise KeysFileError(f"{path}: keys[{n}] must have exactly name, role and sha256")
        name, role, sha = str(entry["name"]), str(entry["role"]), str(entry["sha256"]).lower()
        if role not in ROLES:
            raise KeysFileError(f"{path}: keys[{n}] ({name}): role {role!r} is not one of {ROLES}")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise KeysFileError(f"{path}: keys[{n}] ({name}): sha256 is not a SHA-256 hex digest")
        if name in names:
            raise KeysFileError(f"{path}: keys[{n}]: the name {name!r} is used twice")
        names.add(name)
        out.append({"name": name, "role": role, "sha256": sha})
    return out


def write_keys(path: Path, entries: list[dict[str, str]]) -> None:
    """Replace the file atomically (a worker reading it never sees half a file), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump({"keys": entries}, sort_keys=False))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def add_key(path: Path, name: str, role: Role) -> str:
    """A new random key for `name`; only its hash is stored. Returns the key (shown once)."""
    entries = read_keys(path)
    if any(e["name"] == name for e in entries):
        raise KeysFileError(f"a key named {name!r} exists; revoke it first")
    key = "sp_" + secrets.token_urlsafe(32)
    entries.append({"name": name, "role": role, "sha256": digest(key)})
    write_keys(path, entries)
    return key


def revoke_key(path: Path, name: str) -> bool:
    entries = read_keys(path)
    kept = [e for e in entries if e["name"] != name]
    if len(kept) == len(entries):
        return False
    write_keys(path, kept)
    return True


@dataclass
class Keys:
    """The keys a worker accepts, re-read when the file changes."""

    path: Path | None
    token: str | None  # STOREPULSE_API_TOKEN as the `admin` key `token`, or None
    check_every_s: float = 1.0
    _entries: list[tuple[bytes, Principal]] = field(default_factory=list)
    _stamp: tuple[float, int] | None = None
    _checked: float = 0.0
    error: str | None = None  # the last problem with the file (the previous keys stay)

    def _reload(self) -> None:
        now = time.monotonic()
        if self.path is None or (now - self._checked < self.check_every_s and self._checked):
            return
        self._checked = now
        try:
            st = self.path.stat()
            stamp = (st.st_mtime, st.st_size)
        except OSError:
            stamp = (0.0, 0)
        if stamp == self._stamp:
            return
        try:
            entries = read_keys(self.path)
        except KeysFileError as exc:
            self.error = str(exc)
            return
        self._stamp, self.error = stamp, None
        self._entries = [
            (bytes.fromhex(e["sha256"]), Principal(e["name"], e["role"]))  # type: ignore[arg-type]
            for e in entries
        ]

    def principal(self, key: str) -> Principal | None:
        """Who `key` belongs to, or None. Every entry is compared (constant time per entry)."""
        self._reload()
        if not key:
            return None
        wanted = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found: Principal | None = None
        for sha, who in self._entries:
            if hmac.compare_digest(sha, wanted):
                found = who
        if self.token and hmac.compare_digest(
            key.encode("utf-8", "surrogateescape"), self.token.encode()
        ):
            found = found or Principal("token", "admin")
        return found

    def names(self) -> list[dict[str, str]]:
        self._reload()
        return [{"name": p.name, "role": p.role} for _, p in self._entries]
