"""Where the room's life is told (webhooks): the supervisor and the room actors call
`emit` on Trio's thread; it must never block (services/webhooks.py queues and returns)."""

from __future__ import annotations

from typing import Any, Protocol


class EventSink(Protocol):
    def emit(self, event_type: str, room_id: str, post_id: str, **data: Any) -> None: ...


class _NoEvents:
    def emit(self, event_type: str, room_id: str, post_id: str, **data: Any) -> None:
        pass


NO_EVENTS: EventSink = _NoEvents()
