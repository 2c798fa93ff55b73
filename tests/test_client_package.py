"""The Python client as a package of its own (clients/python): what the backend installs.

A fresh virtual environment gets the client package alone, with its dependencies
resolved by pip (httpx and what httpx needs, nothing of the server, no msgspec), and
from there creates a room on a real server process and verifies the webhook that
server delivered. The suite runs without a network (scripts/test: `unshare -rn`), so
pip gets no index: `--no-index --find-links` a directory holding the client's wheel,
built from clients/python by the setuptools of this environment, and wheels of the
distributions installed here (pure-Python ones: httpx, httpcore, h11, anyio, idna,
certifi, typing_extensions) rebuilt from their RECORD. pip's configuration and
environment are ignored, so nothing but that directory can be used.

Also static: no module of the client imports a server package, and no server module
imports the client.
"""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.serving import server_process
from tests.webhook_receiver import webhook_receiver

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"
SERVER_PACKAGES = ("api", "core", "media", "actors", "transport")
SECRET = "webhook-secret-of-the-package-test"
API_KEY = "package-test-key"
# what `pip install bitbasel-media-client` may bring, and nothing else
EXPECTED = {"bitbasel-media-client", "httpx", "httpcore", "h11", "anyio", "idna", "certifi", "typing-extensions"}

# Runs in the fresh venv (its own directory as sys.path[0], not the repository).
CHECK_SCRIPT = r"""
import asyncio, base64, importlib.metadata, importlib.util, json, sys

import media_server_client
from media_server_client import MediaServerClient, WebhookSignatureError, verify_webhook

command = sys.argv[1]
if command == "create":
    url, api_key = sys.argv[2], sys.argv[3]

    async def main():
        async with MediaServerClient(url, api_key=api_key) as client:
            created = await client.create_room_with_token("post_package", "user_package")
            stats = await client.get_room_stats(created.room_id)
            return created.room_id, stats.is_active

    room_id, active = asyncio.run(main())
    try:
        import media_server_client.signaling  # noqa: F401
        bots_without_extra = "importable"
    except ModuleNotFoundError as exc:
        bots_without_extra = exc.name
    print(json.dumps({
        "room_id": room_id,
        "is_active": active,
        "client_file": media_server_client.__file__,
        "importable_server_packages": [
            name for name in ("api", "core", "media", "actors", "transport") if importlib.util.find_spec(name)
        ],
        "loaded_modules": sorted({name.split(".")[0] for name in sys.modules}),
        "distributions": sorted(d.metadata["Name"] for d in importlib.metadata.distributions()),
        "bots_without_extra": bots_without_extra,
    }))
elif command == "verify":
    given = json.load(sys.stdin)
    body = base64.b64decode(given["body"])
    event = verify_webhook(body, given["header"], given["secret"])
    try:
        verify_webhook(body.replace(b"post_package", b"post_forged"), given["header"], given["secret"])
        forged = "accepted"
    except WebhookSignatureError:
        forged = "refused"
    print(json.dumps({"event": event, "forged": forged}))
"""


# ---- static: the boundary ---------------------------------------------------------------------


def imported_top_levels(path: Path) -> set[str]:
    """Every package a module imports, at any level (function bodies too); relative imports excluded."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_client_module_imports_the_server() -> None:
    modules = sorted((CLIENT / "media_server_client").glob("*.py"))
    assert len(modules) >= 10
    for module in modules:
        assert not imported_top_levels(module) & set(SERVER_PACKAGES), module.name


def test_no_server_module_imports_the_client() -> None:
    modules = [ROOT / "app.py", *(path for name in SERVER_PACKAGES for path in (ROOT / name).rglob("*.py"))]
    for module in modules:
        assert "media_server_client" not in imported_top_levels(module), module.relative_to(ROOT)
    assert not (ROOT / "media_server_client").exists(), "the client lives in clients/python only"


# ---- a fresh venv, offline ----------------------------------------------------------------------


def pip_environment() -> dict[str, str]:
    """This process's environment without pip's settings (and no config file): only the
    command line's --no-index --find-links apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def requirements_closure(requirements: list[str]) -> set[str]:
    """The installed distributions these requirements need (markers evaluated here, no extras)."""
    needed: set[str] = set()
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in needed:
            continue
        needed.add(name)
        dist = importlib.metadata.distribution(name)
        assert dist.version in requirement.specifier, f"installed {name} {dist.version} is not {requirement}"
        pending.extend(Requirement(text) for text in dist.requires or [])
    return needed


def wheel_of_installed(name: str, directory: Path) -> Path:
    """A wheel of an installed pure-Python distribution, from its RECORD (what pip installed)."""
    dist = importlib.metadata.distribution(name)
    wheel_info = dist.read_text("WHEEL") or ""
    assert "Root-Is-Purelib: true" in wheel_info, f"{name} is not pure Python: cannot rebuild its wheel"
    tags = [line.split(":", 1)[1].strip() for line in wheel_info.splitlines() if line.startswith("Tag:")]
    tag = next((t for t in tags if t.startswith("py3")), tags[0])
    files = [f for f in dist.files or [] if f.parts[0] != ".." and "__pycache__" not in f.parts]
    info_dir = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    skipped = {f"{info_dir}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    escaped = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    wheel = directory / f"{escaped}-{dist.version}-{tag}.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            if file.as_posix() in skipped:
                continue
            data = Path(str(dist.locate_file(file))).read_bytes()
            archive.writestr(file.as_posix(), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow([file.as_posix(), f"sha256={digest}", len(data)])
        writer.writerow([f"{info_dir}/RECORD", "", ""])
        archive.writestr(f"{info_dir}/RECORD", record.getvalue())
    return wheel


def run(command: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=pip_environment(), **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, command))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, float]]]:
    """A venv holding `pip install bitbasel-media-client` (no extras), and the seconds each step took."""
    tmp = tmp_path_factory.mktemp("client_package")
    wheels = tmp / "wheels"
    wheels.mkdir()
    timings: dict[str, float] = {}
    started = time.monotonic()

    # the client's wheel, built from a copy of clients/python (the build leaves build/ and egg-info behind)
    source = tmp / "source"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "dist"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", wheels, source])  # fmt: skip
    (client_wheel,) = wheels.glob("bitbasel_media_client-*.whl")
    timings["build the client wheel"] = time.monotonic() - started

    # its dependencies: the wheels of what is installed here
    mark = time.monotonic()
    with zipfile.ZipFile(client_wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    assert [r for r in requires if "extra ==" not in r] == ["httpx==0.28.1"]
    for name in requirements_closure([r for r in requires if "extra ==" not in r]):
        wheel_of_installed(name, wheels)
    timings["rebuild the dependencies' wheels"] = time.monotonic() - mark

    # the venv: no pip of its own (this environment's pip installs into it), nothing else
    mark = time.monotonic()
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--find-links", wheels, "-q",
         "bitbasel-media-client"])  # fmt: skip
    timings["venv + pip install"] = time.monotonic() - mark
    timings["total"] = time.monotonic() - started
    yield python, timings


def test_a_fresh_venv_with_the_client_alone_creates_a_room_and_verifies_a_webhook(
    client_venv: tuple[Path, dict[str, float]], tmp_path: Path
) -> None:
    python, timings = client_venv
    script = tmp_path / "check_client.py"
    script.write_text(CHECK_SCRIPT)
    outside = {"cwd": tmp_path}  # not the repository: nothing of the server on sys.path

    with (
        webhook_receiver() as receiver,
        server_process(
            tmp_path, webhooks={"urls": [receiver.url], "secret": SECRET}, auth={"api_key": API_KEY}
        ) as server,
    ):
        created = json.loads(run([python, script, "create", server.url, API_KEY], **outside).stdout)
        receiver.wait_for(lambda r: "room_started" in r.types(), timeout=15)
    delivery = next(d for d in receiver.deliveries if d.event["type"] == "room_started")

    assert created["room_id"].startswith("room_") and created["is_active"]
    assert Path(created["client_file"]).is_relative_to(python.parent.parent), created["client_file"]
    assert created["importable_server_packages"] == []
    assert not set(created["loaded_modules"]) & {*SERVER_PACKAGES, "msgspec"}
    assert {canonicalize_name(name) for name in created["distributions"]} == EXPECTED
    assert created["bots_without_extra"] in ("msgspec", "trio", "trio_websocket")  # the `bots` extra

    given = {
        "body": base64.b64encode(delivery.body).decode(),
        "header": delivery.headers.get("X-BitBasel-Signature"),
        "secret": SECRET,
    }
    verified = json.loads(run([python, script, "verify"], input=json.dumps(given), **outside).stdout)
    assert verified["event"]["type"] == "room_started"
    assert verified["event"]["room_id"] == created["room_id"]
    assert verified["event"]["post_id"] == "post_package"
    assert verified["forged"] == "refused"
    print(f"\nclient package in a fresh venv: {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}")
    print(f"installed there: {', '.join(created['distributions'])}", f"(no {created['bots_without_extra']})")
