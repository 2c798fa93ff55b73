"""The REST client under Trio (server in-process) and under asyncio (server as a process)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from media_server_client import (
    BadRequestError,
    CapacityError,
    MediaServerClient,
    MediaServerError,
    RoomNotFoundError,
    UnauthorizedError,
    get_media_server_client,
)
from tests.serving import make_config, running_server

ROOT = Path(__file__).resolve().parent.parent


async def test_client_under_trio() -> None:
    with trio.fail_after(15):
        config = make_config(rooms={"max_rooms": 1}, auth={"secret": "x" * 32, "api_key": "key"})
        async with running_server(config) as server:
            client = MediaServerClient(server.url, api_key="key")
            assert await client.health()
            room_id = await client.create_room("post_1", "user_1")
            assert room_id.startswith("room_")
            assert await client.create_room("post_1", "user_1") == room_id
            with pytest.raises(CapacityError):
                await client.create_room("post_2", "user_2")
            token = await client.create_token(room_id, "viewer", "v1", ttl_seconds=60)
            assert token.token and token.expires_at
            stats = await client.get_room_stats(room_id)
            assert stats.is_active and stats.viewer_count == 0 and stats.post_id == "post_1"
            assert (await client.get_server_stats()).active_rooms == 1
            assert await client.list_peers(room_id) == []
            await client.stop_room(room_id)
            assert (await client.get_room_stats(room_id)).stop_reason == "api"
            with pytest.raises(RoomNotFoundError):
                await client.get_room_stats("room_404")
            with pytest.raises(BadRequestError):
                await client.create_token(room_id, "viewer", "v", ttl_seconds=0)
            with pytest.raises(UnauthorizedError):
                await MediaServerClient(server.url, api_key="wrong").get_server_stats()
            async with MediaServerClient(server.url, api_key="key") as pooled:
                for i in range(5):
                    await pooled.get_server_stats()
                    del i
        with pytest.raises(MediaServerError) as unreachable:
            await MediaServerClient(server.url).health()
        assert unreachable.value.code == "unreachable"


@pytest.fixture
def server_process() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip().removeprefix("listening on ")
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_client_under_asyncio(server_process: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIA_SERVER_URL", server_process)
    import media_server_client.rest as rest

    monkeypatch.setattr(rest, "_default_client", None)

    async def backend_flow() -> None:
        async with asyncio.timeout(15):
            media_client = get_media_server_client()
            room_id = await media_client.create_room("post_42", "user_7")
            stats = await media_client.get_room_stats(room_id)
            assert stats.room_id == room_id and stats.is_active
            await media_client.stop_room(room_id)
            assert not (await media_client.get_room_stats(room_id)).is_active

    asyncio.run(backend_flow())
