"""A real ``redis-server`` on a free loopback port, with AOF, for tests.

``RedisServer(dir).start()`` runs ``redis-server --port N --appendonly yes
--dir DIR``; ``kill()`` sends SIGKILL, ``start()`` again restarts it on the
same port from its AOF. :func:`running_redis` makes a fixture of it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import redis

START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_cluster_port() -> int:
    """A free port P <= 55535 whose cluster bus port P + 10000 is free too."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair (P, P + 10000) for a Redis Cluster node")


class RedisServer:
    """One redis-server process; its data (AOF) lives in ``dir``."""

    def __init__(
        self, dir: Path, *, port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        self.dir = dir
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        """Start (or restart, from the AOF) and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        argv = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--save", "",
            "--logfile", str(self.dir / "redis.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{log}")
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; what survives is what the AOF holds."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(10)


@contextlib.contextmanager
def running_redis(dir: Path, extra_args: Sequence[str] = ()) -> Iterator[RedisServer]:
    """A fresh redis-server with AOF in ``dir``, killed on leaving. For a fixture::

        @pytest.fixture
        def redis_server(tmp_path):
            with running_redis(tmp_path / "redis") as server:
                yield server
    """
    server = RedisServer(dir, extra_args=extra_args).start()
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def running_redis_cluster(dir: Path, masters: int = 3) -> Iterator[list[RedisServer]]:
    """A Redis Cluster of ``masters`` primaries (no replicas), each with AOF, killed on leaving.

    ``servers[0].url`` names one node; a cluster client learns the others.
    """
    servers = [
        RedisServer(
            dir / f"node-{i}",
            port=free_cluster_port(),
            extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
        )
        for i in range(masters)
    ]
    try:
        for server in servers:
            server.start()
        nodes = [f"127.0.0.1:{server.port}" for server in servers]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0",
             "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(_cluster_ok(server) for server in servers):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        yield servers
    finally:
        for server in servers:
            server.kill()


def _cluster_ok(server: RedisServer) -> bool:
    info = server.client().execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text or "'cluster_state': 'ok'" in text


class ReplySwallowingProxy:
    """A TCP proxy in front of a server that can swallow the server's replies.

    Fault injection for "the store applied the call, but its answer never
    arrived": while ``swallow`` is set, the first reply for which
    ``matches(reply)`` holds is read and thrown away, and so is everything
    after it on that connection (the client waits until its timeout, then
    reconnects). ``swallowed`` is set once a reply was thrown away. By
    default it matches driftmon's flush replies (an array of the store's
    time, pane and flags), not the handshake or ``SCRIPT EXISTS`` before it.
    """

    def __init__(
        self, upstream_port: int, matches: Callable[[bytes], bool] | None = None
    ) -> None:
        self.upstream_port = upstream_port
        self.matches = matches or _is_flush_reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.swallow = threading.Event()
        self.swallowed = threading.Event()
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, replies: bool) -> None:
        dead = False
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if replies and (dead or (self.swallow.is_set() and self.matches(data))):
                    dead = True
                    self.swallowed.set()
                    continue
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _is_flush_reply(data: bytes) -> bool:
    # [seconds, microseconds, pane, applied, duplicate flags...]: seconds are 10 digits.
    return data[:1] == b"*" and b"\r\n$10\r\n" in data[:12] and data[1:2] in b"456789"
