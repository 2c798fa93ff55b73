"""Run tests/gst_peer.py (a GStreamer webrtcbin host or viewer) from the tests.

The peer runs under Debian's system Python (`/usr/bin/python3`), where
python3-gi and python3-websocket are installed; the project's venv cannot
import `gi`. `GstPeer` starts it as a subprocess, reads its JSON lines (one
event each, see tests/gst_peer.py) in a thread, and stops it at exit: stdin
closed (the peer leaves and exits by itself), then SIGTERM, then SIGKILL.

It is a context manager both ways: `with GstPeer(...)` for plain tests, and
`async with GstPeer(...)` under Trio, where every wait is `await`ed so an
in-process server on the same loop keeps running. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEER_SCRIPT = REPO / "tests" / "gst_peer.py"
WHIP_SCRIPT = REPO / "tests" / "gst_whip.py"
ARTIFACTS = REPO / "tests" / "artifacts"
SYSTEM_PYTHON = os.environ.get("BITBASEL_GST_PYTHON", "/usr/bin/python3")
DEBIAN_PACKAGES = (
    "python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice "
    "python3-websocket"
)

_CHECK = """
import ctypes, gi
gi.require_version("Gst", "1.0"); gi.require_version("GstSdp", "1.0"); gi.require_version("GstWebRTC", "1.0")
from gi.repository import Gst, GstSdp, GstWebRTC
import websocket
Gst.init(None)
missing = [name for name in ("webrtcbin", "nicesrc", "nicesink", "dtlssrtpenc", "srtpenc", "videotestsrc",
           "audiotestsrc", "videoconvert", "audioconvert", "audioresample", "vp8enc", "vp8dec", "rtpvp8pay",
           "rtpvp8depay", "opusenc", "opusdec", "rtpopuspay", "rtpopusdepay", "fakesink", "queue")
           if Gst.ElementFactory.find(name) is None]
ctypes.CDLL("libnice.so.10"); ctypes.CDLL("libgobject-2.0.so.0")
print("missing: " + " ".join(missing) if missing else "ok " + Gst.version_string())
"""


@functools.lru_cache(maxsize=1)
def availability() -> tuple[bool, str]:
    """(True, GStreamer version) when the system Python can run tests/gst_peer.py, else (False, why)."""
    if not Path(SYSTEM_PYTHON).exists():
        return False, f"{SYSTEM_PYTHON} does not exist"
    try:
        result = subprocess.run(
            [SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{SYSTEM_PYTHON} failed: {exc!r}"
    out = result.stdout.strip()
    if result.returncode != 0 or not out.startswith("ok "):
        why = out or (result.stderr.strip().splitlines() or ["?"])[-1]
        return (
            False,
            f"GStreamer webrtcbin is not usable from {SYSTEM_PYTHON} ({why}); apt-get install {DEBIAN_PACKAGES}",
        )
    return True, out[3:]


def available() -> bool:
    return availability()[0]


def write_metrics(name: str, values: dict[str, Any]) -> Path:
    """Merge `values` into tests/artifacts/NAME (JSON)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    existing: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        existing = json.loads(path.read_text())
    existing.update(values)
    path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    return path


class GstPeerError(AssertionError):
    pass


class GstPeer:
    """tests/gst_peer.py as a subprocess; its events as dicts (`event` = the name)."""

    def __init__(
        self,
        role: str,
        ws_url: str,
        room_id: str,
        *,
        user_id: str | None = None,
        bundle_policy: str = "max-bundle",
        seconds: float = 30.0,
        stats_interval: float = 0.25,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.bundle_policy = bundle_policy
        command = [
            "--role",
            role,
            "--ws",
            ws_url,
            "--room",
            room_id,
            "--bundle-policy",
            bundle_policy,
            "--seconds",
            str(seconds),
            "--stats-interval",
            str(stats_interval),
            *(["--user", user_id] if user_id is not None else []),
            *extra_args,
        ]
        self._setup(role, PEER_SCRIPT, command)

    @classmethod
    def whip_publisher(
        cls, url: str, *, encoder: str, token: str | None = None, seconds: float = 30.0, stats_interval: float = 0.25
    ) -> GstPeer:
        """tests/gst_whip.py: a WHIP publisher of H.264 (`encoder`: x264enc or openh264enc) and Opus."""
        peer = cls.__new__(cls)
        peer.bundle_policy = "max-bundle"
        args = ["--url", url, "--encoder", encoder, "--seconds", str(seconds), "--stats-interval", str(stats_interval)]
        peer._setup("whip", WHIP_SCRIPT, args + (["--token", token] if token else []))
        return peer

    def _setup(self, role: str, script: Path, args: list[str]) -> None:
        self.role = role
        self.command = [SYSTEM_PYTHON, "-X", "faulthandler", str(script), *args]
        self.events: list[dict[str, Any]] = []
        self.stderr_lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._changed = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0

    # ---- lifecycle

    def start(self) -> GstPeer:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("GST_DEBUG", "1")  # errors only, on stderr
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for target, name in ((self._read_stdout, "stdout"), (self._read_stderr, "stderr")):
            thread = threading.Thread(target=target, name=f"gst-{self.role}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unparsed", "line": line}
            event["t"] = round(time.monotonic() - self.started_at, 3)
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self.events.append({"event": "eof", "t": round(time.monotonic() - self.started_at, 3)})
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.stderr_lines.append(line.rstrip())
                del self.stderr_lines[:-200]

    def _close_stdin(self) -> None:
        if self.process is not None and self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # EOF: the peer leaves and exits by itself

    def _force_stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for thread in self._threads:
            thread.join(timeout=2)

    def stop(self, timeout: float = 6.0) -> int | None:
        """Close stdin and wait for a clean exit; then terminate, then kill."""
        self._close_stdin()
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        self._force_stop()
        return self.returncode

    async def aclose(self, within: float = 6.0) -> int | None:
        """`stop` for Trio: the wait for the clean exit runs in a thread, so an in-process server on
        this loop answers the peer's `leave` meanwhile."""
        import trio

        self._close_stdin()
        process = self.process
        if process is not None:

            def wait() -> None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=within)

            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(wait)
        self._force_stop()
        return self.returncode

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def __enter__(self) -> GstPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> GstPeer:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ---- events

    def events_named(self, name: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.events if e.get("event") == name]

    def find_event(self, name: str, predicate: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        with self._changed:
            for event in self.events:
                if event.get("event") == name and (predicate is None or predicate(event)):
                    return event
        return None

    def latest_stats(self) -> dict[str, Any] | None:
        stats = self.events_named("stats")
        return stats[-1] if stats else None

    @property
    def exited(self) -> bool:
        with self._changed:
            return any(e.get("event") == "eof" for e in self.events)

    def describe(self, last: int = 25) -> str:
        with self._changed:
            events = [e for e in self.events if e.get("event") not in ("stats", "candidate")][-last:]
            stats = [e for e in self.events if e.get("event") == "stats"][-1:]
            stderr = self.stderr_lines[-15:]
        lines = [f"gst {self.role} ({self.bundle_policy}), exit status {self.returncode}; events:"]
        lines += [f"  {json.dumps(e, sort_keys=True)[:400]}" for e in events + stats]
        if stderr:
            lines.append("stderr:")
            lines += [f"  {line[:400]}" for line in stderr]
        return "\n".join(lines)

    def wait_event(
        self, name: str, timeout: float, predicate: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """Block until an event `name` (for which `predicate` holds) has come; raise after `timeout`
        or when the peer has exited without it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self.find_event(name, predicate)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.exited:
                    break
                self._changed.wait(min(remaining, 0.5))
        why = "exited" if self.exited else f"not within {timeout} s"
        raise GstPeerError(f"no {name!r} event ({why})\n{self.describe()}")

    async def await_event(
        self, name: str, within: float, predicate: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """`wait_event` for Trio (polls every 50 ms, never blocks the loop)."""
        import trio

        deadline = time.monotonic() + within
        while True:
            found = self.find_event(name, predicate)
            if found is not None:
                return found
            if time.monotonic() >= deadline or self.exited:
                break
            await trio.sleep(0.05)
        why = "exited" if self.exited else f"not within {within} s"
        raise GstPeerError(f"no {name!r} event ({why})\n{self.describe()}")

    async def await_first(self, names: Sequence[str], within: float) -> dict[str, Any]:
        """The first of several events to come (e.g. `answer` or `error`)."""
        import trio

        deadline = time.monotonic() + within
        while True:
            with self._changed:
                for event in self.events:
                    if event.get("event") in names:
                        return event
            if time.monotonic() >= deadline or self.exited:
                break
            await trio.sleep(0.05)
        raise GstPeerError(f"none of {list(names)} within {within} s\n{self.describe()}")
