"""config.toml decoding and `python app.py` as a process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.config import ConfigError, load_config, parse_config
from tests.serving import app_process

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_is_the_defaults() -> None:
    assert load_config(ROOT / "config.toml") == parse_config("")


def test_missing_sections_take_defaults() -> None:
    config = parse_config("[server]\nport = 9000\n")
    assert config.server.port == 9000 and config.server.host == "0.0.0.0"
    assert config.rooms.max_viewers_per_room == 100 and config.video.host_codecs == ("VP8", "H264")
    assert config.ice.stun_servers == [] and config.auth.secret == ""


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[bogus]\nx = 1", "bogus"),
        ("[server]\nprt = 1", "server.prt"),
        ("[server]\nport = 70000", "server.port"),
        ("[server]\nport = -1", "server.port"),
        ('[server]\nport = "80"', "server.port"),
        ("[server]\nmax_connections = 0", "server.max_connections"),
        ("[rooms]\nmax_rooms = 0", "rooms.max_rooms"),
        ("[rooms]\nidle_timeout_seconds = 0", "rooms.idle_timeout_seconds"),
        ('[video]\ncodec = "H264"', "video.codec"),
        ('[video]\ncodecs = ["AV1"]', "video.codecs"),
        ("[video]\ncodecs = []", "codecs"),
        ('[video]\ncodecs = ["VP8", "VP8"]', "codecs"),
        ('[audio]\ncodec = "AAC"', "audio.codec"),
        ("[audio]\nsample_rate = 44100", "audio.sample_rate"),
        ('[auth]\nsecret = "too short"', "secret"),
        ('[ice]\nhost_addresses = "127.0.0.1"', "ice.host_addresses"),
        ('[debug]\nfault_injection = "yes"', "debug.fault_injection"),
        ('[server]\ncertfile = "a.pem"', "certfile"),
    ],
)
def test_bad_values_name_the_key(toml: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_config(toml)


def run_app(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_bad_config_exits_with_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[rooms]\nmax_viewers_per_room = -5\n")
    result = run_app("--config", str(bad))
    assert result.returncode == 2
    assert "rooms.max_viewers_per_room" in result.stderr
    missing = run_app("--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_app_prints_listening_line_and_stops_on_sigterm() -> None:
    with app_process("--host", "127.0.0.1", "--port", "0") as (process, line):
        assert line.startswith("listening on http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        assert port > 0
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["status"] == "healthy"
        process.terminate()
        assert process.wait(timeout=15) == 0
