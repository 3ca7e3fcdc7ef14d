"""A redis-server from Debian on a free loopback port: append-only file (`appendfsync
everysec`, what production runs) unless `persistent=False` for a throw-away one."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from infra.process import InfraError, apt_install, free_port, spawn, stop_group, wait_until


def ensure_redis_server() -> str:
    """Path of redis-server; installs Debian's package when missing and we may (root)."""
    path = shutil.which("redis-server")
    if path:
        return path
    apt_install(
        ["redis-server"],
        "redis-server not found: run `sudo apt-get install -y redis-server`, "
        "or set REDIS_URL to an existing Redis",
    )
    # The package starts a system service on 6379; ours uses its own port, so that one may stay.
    path = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(path).exists():
        raise InfraError("redis-server is still missing after apt-get install")
    return path


def _pong(port: int) -> bool:
    """Up, even where an ACL refuses an anonymous PING (`-NOAUTH`)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@dataclass
class RedisServer:
    """`persistent` keeps an append-only file fsynced every second (`fsync="always"`: every
    write), so a restart (same port) keeps every key but at most the last second's."""

    workdir: Path
    port: int = 0
    pid: int | None = None
    persistent: bool = True
    fsync: str = "everysec"
    # (user, password): an ACL user with access to every key, and no default user (no AUTH-less
    # client gets in)
    acl_user: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        login = f"{self.acl_user[0]}:{self.acl_user[1]}@" if self.acl_user else ""
        return f"redis://{login}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> str:
        binary = ensure_redis_server()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()  # a restart keeps its port
        log = self.workdir / "redis.log"
        durability = (
            ["--appendonly", "yes", "--appendfsync", self.fsync]
            if self.persistent
            else ["--appendonly", "no"]
        )
        command = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *durability,
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
            "--protected-mode",
            "yes",
        ]
        if self.acl_user:
            user, password = self.acl_user
            command += ["--user", "default", "off", "--user", user, "on", f">{password}"]
            command += ["~*", "&*", "+@all"]
        proc = spawn(command, log=log)
        self.pid = proc.pid
        try:
            wait_until(
                lambda: _pong(self.port), timeout=timeout, what="redis-server", proc=proc, log=log
            )
        except InfraError:
            self.stop()
            raise
        return self.url

    def lose_data(self) -> None:
        """Stopped: what a server that comes back on an empty disk (a lost volume, a new node)
        starts with: nothing. `start()` again afterwards, on the same port."""
        self.stop()
        for name in ("appendonlydir", "appendonly.aof", "dump.rdb"):
            path = self.workdir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def stop(self) -> None:
        if self.pid is not None:
            stop_group(self.pid, grace=10.0)
            self.pid = None
