"""Debian's Firefox ESR for the tests, driven over WebDriver BiDi by tests/js/firefox_driver.mjs.

puppeteer-core (pinned in tests/js/package-lock.json, installed by `npm ci` in scripts/install)
launches /usr/bin/firefox-esr headless with prefs that keep it off the network; this module
speaks the driver's JSON lines: `FirefoxDriver.open(url)` gives a `FirefoxPage` whose
`evaluate(js, arg)` runs a function's source in the page and returns its JSON value. Every
call is bounded.

The network: the suite runs in `unshare -rn` (only `lo`). Firefox gathers UDP host candidates
only on the interface of its default route, and only from an address that is not loopback's
(for 127.0.0.1 the kernel picks no source address for a default route), and it does not pair
its candidates with a remote 127.0.0.1. So :func:`namespace_lan` gives `lo` a second address,
`NAMESPACE_ADDRESS` (10.255.255.1/32), and a default route through `lo` from it, for the
Firefox tests only, and the server listens on it too. Everything stays on `lo`: nothing can
leave the namespace. It refuses to touch a network that has any interface besides `lo`.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DRIVER = REPO / "tests" / "js" / "firefox_driver.mjs"
PUPPETEER = REPO / "tests" / "js" / "node_modules" / "puppeteer-core"
FIREFOX = Path("/usr/bin/firefox-esr")
START_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 60.0
NAMESPACE_ADDRESS = "10.255.255.1"


def _only_loopback() -> bool:
    """This network namespace has no interface but `lo` (a private one: scripts/test)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def unavailable_reason() -> str | None:
    if not _only_loopback():
        return "the Firefox tests change the network: run them in a private namespace (scripts/test)"
    if not FIREFOX.exists():
        return f"Firefox ESR is not installed at {FIREFOX} (apt-get install firefox-esr)"
    if shutil.which("node") is None:
        return "node is not installed"
    if not PUPPETEER.exists():
        return "puppeteer-core is not installed (cd tests/js && npm ci)"
    return None


class FirefoxError(AssertionError):
    pass


class FirefoxDriver:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process
        self._answers: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self.console: dict[int, list[str]] = {}
        self.page_errors: dict[int, list[str]] = {}
        self.version = ""
        self._ready: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, name="firefox-driver", daemon=True).start()
        try:
            ready = self._ready.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise FirefoxError(f"Firefox did not start within {START_TIMEOUT_S} s") from None
        if "version" not in ready:
            raise FirefoxError(f"Firefox did not start: {ready}")
        self.version = str(ready["version"])

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            event = message.get("event")
            if event == "ready":
                self._ready.put(message)
            elif event in ("console", "pageerror"):
                target = self.console if event == "console" else self.page_errors
                target.setdefault(int(message["page"]), []).append(str(message["text"]))
            elif "id" in message:
                with self._lock:
                    answers = self._answers.get(int(message["id"]))
                if answers is not None:
                    answers.put(message)
        self._ready.put({"error": "the driver exited"})
        with self._lock:
            for answers in self._answers.values():
                answers.put({"error": "the driver exited"})

    def call(self, cmd: str, timeout: float = CALL_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            call_id = self._next_id
            answers: queue.Queue[dict[str, Any]] = queue.Queue()
            self._answers[call_id] = answers
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"id": call_id, "cmd": cmd, **fields}) + "\n")
        self._process.stdin.flush()
        try:
            answer = answers.get(timeout=timeout)
        except queue.Empty:
            raise FirefoxError(f"Firefox: {cmd} not answered within {timeout} s") from None
        finally:
            with self._lock:
                self._answers.pop(call_id, None)
        if "error" in answer:
            raise FirefoxError(f"Firefox: {cmd} failed: {answer['error']}")
        return answer

    def open(self, url: str) -> FirefoxPage:
        return FirefoxPage(self, int(self.call("open", url=url)["page"]))


class FirefoxPage:
    def __init__(self, driver: FirefoxDriver, page_id: int) -> None:
        self.driver = driver
        self.id = page_id

    def evaluate(self, js: str, arg: Any = None, timeout: float = CALL_TIMEOUT_S) -> Any:
        """Run a function's source (`"async (arg) => ..."`) in the page; its JSON value."""
        return self.driver.call("eval", timeout=timeout, page=self.id, js=js, arg=arg)["value"]

    def close(self) -> None:
        self.driver.call("close", page=self.id)

    @property
    def console(self) -> list[str]:
        return self.driver.console.get(self.id, [])

    @property
    def errors(self) -> list[str]:
        return self.driver.page_errors.get(self.id, [])


@contextmanager
def firefox(log_path: Path) -> Iterator[FirefoxDriver]:
    log = log_path.open("w")
    process = subprocess.Popen(
        ["node", str(DRIVER)],
        cwd=DRIVER.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,  # node and Firefox in a group of their own: all stopped at the end
    )
    try:
        yield FirefoxDriver(process)
    finally:
        if process.stdin is not None:
            process.stdin.close()  # the driver closes the browser
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        with suppress(ProcessLookupError):  # whatever of Firefox is left
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@contextmanager
def namespace_lan() -> Iterator[str]:
    """`NAMESPACE_ADDRESS` on `lo` with a default route from it, removed at exit (see above)."""
    if not _only_loopback():
        raise RuntimeError("refusing to change a network with interfaces besides lo")
    address = f"{NAMESPACE_ADDRESS}/32"
    subprocess.run(["ip", "addr", "add", address, "dev", "lo"], check=True)
    try:
        subprocess.run(["ip", "route", "add", "default", "dev", "lo", "src", NAMESPACE_ADDRESS], check=True)
        try:
            yield NAMESPACE_ADDRESS
        finally:
            subprocess.run(["ip", "route", "del", "default", "dev", "lo"], check=False)
    finally:
        subprocess.run(["ip", "addr", "del", address, "dev", "lo"], check=False)


def server_toml(lan: str) -> str:
    """A loopback server config whose media port also listens on the namespace's second address."""
    return f"""
[server]
host = "127.0.0.1"
port = 0
[ice]
host_addresses = ["127.0.0.1", "{lan}"]
udp_port = 0
"""
