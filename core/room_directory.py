"""Where rooms are written down so that a restart (an upgrade, a crash, `kill -9`) loses none.

One small interface (`RoomDirectory`, async) with two backends:

- `SqliteRoomDirectory`, the embedded default for a single node (`[cluster] state_path`): the
  stdlib `sqlite3`, one file, WAL. sqlite3 blocks, so every call runs in a worker thread, one
  at a time; never on the event loop's thread.
- `cluster.redis_directory.RedisRoomDirectory` when several nodes share rooms
  (`[cluster] redis_url`): the same rows in Redis, each with the node and worker that holds it.

A row per room the backend created: id, post, host user, creation time, whether it records,
and its stop time and reason once stopped. `load` returns the rows of this server (for Redis:
of this node's worker); the owner of the directory applies writes in order
(services/room_store.py).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Protocol

import msgspec
import trio

SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    room_id      TEXT PRIMARY KEY,
    post_id      TEXT NOT NULL,
    host_user_id TEXT NOT NULL,
    created_at   REAL NOT NULL,
    record       INTEGER NOT NULL DEFAULT 0,
    stopped_at   REAL,
    stop_reason  TEXT
)
"""


class RoomRow(msgspec.Struct, frozen=True):
    room_id: str
    post_id: str
    host_user_id: str
    created_at: float  # unix seconds
    record: bool = False
    stopped_at: float | None = None  # unix seconds
    stop_reason: str | None = None


class RoomDirectoryError(Exception):
    """The backend could not read or write (a broken file, Redis unreachable)."""


class RoomDirectory(Protocol):
    async def load(self) -> list[RoomRow]: ...
    async def save(self, row: RoomRow) -> None: ...
    async def mark_stopped(self, room_id: str, reason: str, at: float) -> None: ...
    async def forget(self, room_id: str) -> None: ...
    async def aclose(self) -> None: ...


class SqliteRoomDirectory:
    """One SQLite file (":memory:" for none); every method commits before it returns.
    Open it with `await SqliteRoomDirectory.open(path)`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._one_at_a_time = trio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: str) -> SqliteRoomDirectory:
        def connect() -> sqlite3.Connection:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a committed row survives kill -9
            db.execute(SCHEMA)
            return db

        try:
            return cls(await trio.to_thread.run_sync(connect))
        except (OSError, sqlite3.Error) as exc:
            raise RoomDirectoryError(f"cannot use {path!r}: {exc}") from exc

    async def _run(self, statement: str, *parameters: object) -> list[tuple[Any, ...]]:
        def execute() -> list[tuple[Any, ...]]:
            return self._db.execute(statement, parameters).fetchall()

        try:
            return await trio.to_thread.run_sync(execute, limiter=self._one_at_a_time)
        except sqlite3.Error as exc:
            raise RoomDirectoryError(str(exc)) from exc

    async def load(self) -> list[RoomRow]:
        rows = await self._run(
            "SELECT room_id, post_id, host_user_id, created_at, record, stopped_at, stop_reason"
            " FROM rooms ORDER BY created_at"
        )
        return [
            RoomRow(room_id, post, host, created, bool(record), stopped, reason)
            for room_id, post, host, created, record, stopped, reason in rows
        ]

    async def save(self, row: RoomRow) -> None:
        await self._run(
            "INSERT OR REPLACE INTO rooms VALUES (?, ?, ?, ?, ?, ?, ?)",
            row.room_id,
            row.post_id,
            row.host_user_id,
            row.created_at,
            int(row.record),
            row.stopped_at,
            row.stop_reason,
        )

    async def mark_stopped(self, room_id: str, reason: str, at: float) -> None:
        await self._run(
            "UPDATE rooms SET stopped_at = ?, stop_reason = ? WHERE room_id = ? AND stopped_at IS NULL",
            at,
            reason,
            room_id,
        )

    async def forget(self, room_id: str) -> None:
        await self._run("DELETE FROM rooms WHERE room_id = ?", room_id)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._db.close, limiter=self._one_at_a_time)
