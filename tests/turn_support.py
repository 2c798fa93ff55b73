"""A real coturn (Debian's `coturn`) on loopback for the tests, with `use-auth-secret`.

Started on a free port with its own relay port range, no TLS/DTLS listeners,
no CLI, no config file, logging to a file under the test's directory; stopped
(SIGTERM, then SIGKILL) at the end. Ready once it answers a STUN Binding
request. Loopback peers are allowed: the media server is on 127.0.0.1 too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aioice import stun

TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"
START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Turn:
    url: str  # turn:127.0.0.1:<port>?transport=udp
    secret: str
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def available() -> bool:
    return os.path.exists(TURNSERVER)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers_stun(port: int) -> bool:
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        try:
            probe.sendto(bytes(request), ("127.0.0.1", port))
            data, _ = probe.recvfrom(2048)
        except OSError:
            return False
    with contextlib.suppress(ValueError):
        return stun.parse_message(data).transaction_id == request.transaction_id
    return False


@contextlib.contextmanager
def coturn(tmp_dir: Path) -> Iterator[Turn]:
    port = _free_udp_port()
    relay_low = 40000 + secrets.randbelow(20000)
    secret = secrets.token_hex(16)
    log_path = tmp_dir / "coturn.log"
    argv = [
        TURNSERVER,
        "-n",  # no configuration file
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        f"--min-port={relay_low}",
        f"--max-port={relay_low + 200}",
        "--use-auth-secret",
        f"--static-auth-secret={secret}",
        "--realm=bitbasel.test",
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--fingerprint",
        f"--pidfile={tmp_dir / 'coturn.pid'}",
        f"--log-file={log_path}",
        "--simple-log",
        "--no-stdout-log",
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers_stun(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coturn did not start (exit {process.poll()}): {log_path.read_text()[-2000:]}")
        yield Turn(url=f"turn:127.0.0.1:{port}?transport=udp", secret=secret, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
