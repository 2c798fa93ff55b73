"""Where rooms are written down so that a restart (an upgrade, a crash, `kill -9`) loses none.

`SqliteRoomDirectory` is the embedded backend (the stdlib `sqlite3`, one file, WAL): a row
per room the backend created (id, post, host user, creation time, stop state and reason,
whether it records). It is synchronous and blocking: the server calls it only from a
worker thread (actors/room_store.py), never on the event loop's thread.

The interface (`RoomDirectory`) is what a shared backend (Redis, for several nodes) would
implement too; only the embedded one exists so far.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Protocol

import msgspec

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


class RoomDirectory(Protocol):
    def load(self) -> list[RoomRow]: ...
    def save(self, row: RoomRow) -> None: ...
    def mark_stopped(self, room_id: str, reason: str, at: float) -> None: ...
    def forget(self, room_id: str) -> None: ...
    def close(self) -> None: ...


class SqliteRoomDirectory:
    """One SQLite file (":memory:" for none); every method commits before it returns."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # used from worker threads, one call at a time (the lock), never from the event loop's thread
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a committed row survives kill -9
            self._db.execute(SCHEMA)

    def load(self) -> list[RoomRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT room_id, post_id, host_user_id, created_at, record, stopped_at, stop_reason"
                " FROM rooms ORDER BY created_at"
            ).fetchall()
        return [
            RoomRow(room_id, post_id, host, created, bool(record), stopped_at, reason)
            for room_id, post_id, host, created, record, stopped_at, reason in rows
        ]

    def save(self, row: RoomRow) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO rooms VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    row.room_id,
                    row.post_id,
                    row.host_user_id,
                    row.created_at,
                    int(row.record),
                    row.stopped_at,
                    row.stop_reason,
                ),
            )

    def mark_stopped(self, room_id: str, reason: str, at: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE rooms SET stopped_at = ?, stop_reason = ? WHERE room_id = ? AND stopped_at IS NULL",
                (at, reason, room_id),
            )

    def forget(self, room_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM rooms WHERE room_id = ?", (room_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
