"""A real `redis-server` for the tests: on 127.0.0.1, a free port, no persistence.

    with redis_server() as url:                       # redis://127.0.0.1:<port>/0
    with redis_server(password="s3cret") as url:       # redis://:s3cret@127.0.0.1:<port>/0
    with redis_server(port=port) as url:               # that port (e.g. to restart a server)

The server runs in a temporary directory (its log is `redis.log` there, quoted when it fails
to start) and is stopped when the block ends: SIGTERM, then SIGKILL after 5 s.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

from cluster.resp import NeedMore, RespParser, RespProtocolError, RespValue, encode_command

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 3


class RedisServerError(RuntimeError):
    """redis-server is missing or did not start."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def redis_server(*, password: str | None = None, port: int | None = None) -> Iterator[str]:
    """Run redis-server for the block and yield its URL (with the password when given)."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RedisServerError("redis-server is not installed (Debian: apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="redis-test-") as workdir:
        attempts = 1 if port is not None else PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            chosen = free_port() if port is None else port
            process = _start(executable, Path(workdir), chosen, password)
            try:
                if _wait_until_ready(process, chosen, password):
                    break
                log = _log_tail(Path(workdir))
                if attempt == attempts:
                    raise RedisServerError(f"redis-server on port {chosen} did not start (port taken?):\n{log}")
            except BaseException:
                _stop(process)
                raise
        try:
            auth = f":{quote(password, safe='')}@" if password is not None else ""
            yield f"redis://{auth}{HOST}:{chosen}/0"
        finally:
            _stop(process)


def _start(executable: str, workdir: Path, port: int, password: str | None) -> subprocess.Popen[bytes]:
    args = [executable, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--logfile", str(workdir / "redis.log"), "--daemonize", "no"]
    if password is not None:
        args += ["--requirepass", password]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_until_ready(process: subprocess.Popen[bytes], port: int, password: str | None) -> bool:
    """True once this process answers on the port (PING, then INFO's process_id: not some
    other server that holds it); False if it exited (e.g. the port was taken). Raises if it
    neither answers nor exits in time."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        pid = _answering_pid(port, password)
        if pid == process.pid:
            return True
        if pid is not None:  # another server on this port: ours will exit (address in use)
            try:
                process.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                break
            return False
        time.sleep(0.02)
    raise RedisServerError(f"redis-server on port {port} did not answer PING within {START_TIMEOUT} s")


def _answering_pid(port: int, password: str | None) -> int | None:
    """The process id of the Redis server on the port, or None if none answers PING."""
    commands: list[tuple[str, ...]] = [("AUTH", password)] if password is not None else []
    commands += [("PING",), ("INFO", "server")]
    parser = RespParser()
    replies: list[RespValue] = []
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"".join(encode_command(*command) for command in commands))
            while len(replies) < len(commands):
                data = sock.recv(65536)
                if not data:
                    return None
                parser.feed(data)
                while not isinstance(reply := parser.next_reply(), NeedMore):
                    replies.append(reply)
    except (OSError, RespProtocolError):
        return None
    *_, pong, info = replies
    if pong != "PONG" or not isinstance(info, bytes):
        return None
    match = re.search(rb"^process_id:(\d+)", info, re.MULTILINE)
    return int(match[1]) if match else None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _log_tail(workdir: Path, lines: int = 20) -> str:
    with suppress(OSError):
        return "\n".join((workdir / "redis.log").read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


class TcpProxy:
    """A TCP relay on loopback to `target_port`, which `cut()` ends for good: every connection
    closed, new ones refused. Puts one client of a server behind a partition the others do not
    see (e.g. one cluster node losing Redis)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            with suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (Linux)
            self.listener.close()
            for sock in self._sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
