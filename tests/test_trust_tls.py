"""`[server] certfile/keyfile`: REST over HTTPS and signaling over WSS, with a
real TLS handshake against a self-signed certificate made here for 127.0.0.1
(an IP subjectAltName), trusted by the clients and by nothing else."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from trio_websocket import HandshakeError, open_websocket_url

from api.server import run_server
from core.config import ConfigError
from media_server_client.messages import Ping, Pong
from media_server_client.signaling import connect_signaling
from tests.serving import ROOT, app_process, make_config, running_server

LOOPBACK = "127.0.0.1"


def write_self_signed(directory: Path, host: str = LOOPBACK) -> tuple[Path, Path]:
    """A fresh EC key and a one-day self-signed certificate for `host` (SAN IP)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bitbasel-media-test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    keyfile.chmod(0o600)
    return certfile, keyfile


def trusting(certfile: Path) -> ssl.SSLContext:
    """A client context that trusts this certificate only (hostname checked)."""
    return ssl.create_default_context(cafile=str(certfile))


def causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_self_signed(tmp_path)


async def test_rest_and_websocket_over_tls(tls_files: tuple[Path, Path]) -> None:
    certfile, keyfile = tls_files
    context = trusting(certfile)
    config = make_config(server={"certfile": str(certfile), "keyfile": str(keyfile)})
    with trio.fail_after(15):
        async with running_server(config) as server:
            assert server.url.startswith(f"https://{LOOPBACK}:") and server.ws_url.startswith("wss://")
            port = server.address.port
            async with httpx.AsyncClient(base_url=server.url, verify=context, timeout=10) as client:
                assert (await client.get("/health")).json() == {"status": "healthy", "service": "media_server"}
                created = await client.post("/room/create", json={"post_id": "post_tls", "host_user_id": "alice"})
                assert created.status_code == 200
                room_id = created.json()["room_id"]
                assert (await client.get(f"/room/{room_id}/stats")).json()["is_active"] is True

            async with connect_signaling(server.ws_url, ssl_context=context) as session:
                stream = session.connection._stream  # trio-websocket keeps its stream private
                assert isinstance(stream, trio.SSLStream)
                assert stream.version() in ("TLSv1.2", "TLSv1.3")
                joined = await session.join(room_id, "viewer", user_id="bob")
                assert joined.room_id == room_id
                await session.send(Ping())
                assert await session.expect(Pong) == Pong()

            # a client that does not trust the certificate is refused by its own TLS check
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as untrusting:
                with pytest.raises(httpx.ConnectError) as untrusted:
                    await untrusting.get("/health")
            assert any(isinstance(exc, ssl.SSLCertVerificationError) for exc in causes(untrusted.value))
            # plain HTTP and plain WebSocket to the TLS port get nothing
            async with httpx.AsyncClient(timeout=5) as plain:
                with pytest.raises(httpx.TransportError):
                    await plain.get(f"http://{LOOPBACK}:{port}/health")
            with pytest.raises((HandshakeError, trio.BrokenResourceError, OSError)):  # no answer (timeout)
                async with open_websocket_url(f"ws://{LOOPBACK}:{port}/ws", connect_timeout=1):
                    pass
            # and the server still serves TLS clients after those
            async with httpx.AsyncClient(base_url=server.url, verify=context, timeout=10) as client:
                assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize("workers", [1, 2])
def test_app_prints_https_with_tls_on(tls_files: tuple[Path, Path], tmp_path: Path, workers: int) -> None:
    """One process, or a front over media workers: the front serves TLS itself."""
    certfile, keyfile = tls_files
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\ncertfile = "{certfile}"\nkeyfile = "{keyfile}"\n'
        f"[ice]\nudp_port = 0\n[cluster]\nworkers = {workers}\n"
    )
    with app_process("--config", str(config), "--host", LOOPBACK, "--port", "0") as (process, line):
        assert line.startswith(f"listening on https://{LOOPBACK}:"), line
        port = int(line.rsplit(":", 1)[1])
        assert port > 0
        response = httpx.get(f"https://{LOOPBACK}:{port}/health", verify=trusting(certfile), timeout=5)
        assert response.json()["status"] == "healthy"
        process.terminate()
        assert process.wait(timeout=15) == 0


async def test_unusable_tls_files_stop_the_start_naming_the_keys(tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    certfile, keyfile = tls_files
    (tmp_path / "other").mkdir()
    _, other_key = write_self_signed(tmp_path / "other")
    # missing file, a key that is not the certificate's, a key where the certificate should be
    for cert, key in ((tmp_path / "missing.pem", keyfile), (certfile, other_key), (keyfile, keyfile)):
        config = make_config(server={"certfile": str(cert), "keyfile": str(key)})
        with trio.fail_after(5), pytest.raises(ConfigError, match=r"server\.certfile/server\.keyfile: cannot load"):
            await run_server(config, trio.Event())


def test_app_exits_2_naming_the_keys_when_the_tls_files_are_unusable(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\ncertfile = "{tmp_path / "missing.pem"}"\nkeyfile = "{tmp_path / "missing.key"}"\n')
    finished = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--config", str(config), "--host", LOOPBACK, "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode == 2, finished.stderr
    assert "server.certfile/server.keyfile: cannot load" in finished.stderr
    assert "Traceback" not in finished.stderr
