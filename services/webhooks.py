"""Webhooks: the room's life POSTed to the platform's receivers, signed, at least once.

`Webhooks.emit` (synchronous, never blocks, called by the supervisor and the room
actors on Trio's thread) makes an event and queues it for every URL. Delivery runs
in `Webhooks.run`'s nursery:

- **per receiver, per room, in order**: one task per (URL, room) with pending
  events delivers them one after the other; a room's next event waits until the
  previous one is delivered or given up. Rooms and receivers never wait for each
  other: a slow or dead receiver only holds its own tasks (at most
  `MAX_IN_FLIGHT_PER_URL` requests at once), never media, REST or another URL;
- **at least once**: anything but a 2xx (or no answer within `timeout_seconds`)
  is retried with exponential backoff (0.5 s doubling to 30 s, jittered) until
  `retry_for_seconds` after the event was made, then given up (counted, logged);
- **signed**: `X-BitBasel-Signature: t=...,v1=HMAC-SHA256(secret, "t.body")`
  (media_server_client.webhooks, which receivers use to verify); every event has a
  unique `id` for de-duplication, also sent as `X-BitBasel-Event-Id`;
- **bounded**: at most `max_pending` undelivered events per URL; more are dropped
  (counted, logged).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import trio

from core.config import WebhooksConfig
from core.credentials import redact_url
from core.webhook_signature import SIGNATURE_HEADER, sign_webhook

log = logging.getLogger("bitbasel.webhooks")

EVENT_TYPES = frozenset(
    {"room_started", "host_live", "host_left", "room_stopped", "recording_ready", "viewer_joined", "viewer_left"}
)
VIEWER_EVENTS = frozenset({"viewer_joined", "viewer_left"})
MAX_IN_FLIGHT_PER_URL = 16
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 30.0


class WebhookEvent(msgspec.Struct, frozen=True):
    id: str
    type: str
    room_id: str
    post_id: str
    created_at: float  # unix seconds
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class WebhookStatistics:
    __slots__ = ("delivered", "dropped", "failed", "retried")

    def __init__(self) -> None:
        self.delivered = 0  # 2xx
        self.retried = 0  # attempts after a failed one
        self.failed = 0  # given up after retry_for_seconds
        self.dropped = 0  # max_pending reached

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _Receiver:
    """One URL: its pending events by room, and the rooms being delivered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = redact_url(url)  # in logs: never the password a URL may carry
        self.pending: dict[str, deque[tuple[WebhookEvent, bytes]]] = {}
        self.count = 0
        self.limiter = trio.CapacityLimiter(MAX_IN_FLIGHT_PER_URL)


class Webhooks:
    def __init__(self, config: WebhooksConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._receivers = [_Receiver(url) for url in config.urls]
        self._nursery: trio.Nursery | None = None
        self._client: httpx.AsyncClient | None = None
        self._encoder = msgspec.json.Encoder()
        self.statistics = WebhookStatistics()
        self._progress = trio.lowlevel.ParkingLot()  # an event delivered or given up: for flush()

    @property
    def enabled(self) -> bool:
        return bool(self._receivers)

    def emit(self, event_type: str, room_id: str, post_id: str, **data: Any) -> None:
        """Queue an event for every receiver (a no-op without URLs, or for viewer events
        unless `viewer_events` is on). Never blocks."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown webhook event {event_type!r}")
        if not self._receivers or (event_type in VIEWER_EVENTS and not self._config.viewer_events):
            return
        event = WebhookEvent(uuid.uuid4().hex, event_type, room_id, post_id, self._clock(), data)
        body = self._encoder.encode(event)
        for receiver in self._receivers:
            if receiver.count >= self._config.max_pending:
                self.statistics.dropped += 1
                if self.statistics.dropped == 1 or self.statistics.dropped % 1000 == 0:
                    log.warning("webhook %s: %d events pending, dropping (%d so far)",
                                receiver.shown, receiver.count, self.statistics.dropped)  # fmt: skip
                continue
            queue = receiver.pending.get(room_id)
            receiver.count += 1
            if queue is not None:  # its task is delivering the room's earlier events
                queue.append((event, body))
                continue
            receiver.pending[room_id] = deque([(event, body)])
            if self._nursery is not None:
                try:
                    self._nursery.start_soon(self._deliver_room, receiver, room_id)
                except RuntimeError:  # the server is stopping: its nursery takes no more tasks
                    self.statistics.dropped += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        timeout = httpx.Timeout(self._config.timeout_seconds)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client, trio.open_nursery() as nursery:
            self._client = client
            self._nursery = nursery
            for receiver in self._receivers:  # events emitted before run
                for room_id in receiver.pending:
                    nursery.start_soon(self._deliver_room, receiver, room_id)
            task_status.started()
            await trio.sleep_forever()

    async def flush(self) -> None:
        """Until nothing is pending for any receiver (bound it: at shutdown)."""
        while any(receiver.count for receiver in self._receivers):
            await self._progress.park()

    async def _deliver_room(self, receiver: _Receiver, room_id: str) -> None:
        queue = receiver.pending[room_id]
        try:
            while queue:
                event, body = queue[0]
                await self._deliver(receiver, event, body)
                queue.popleft()
                receiver.count -= 1
                self._progress.unpark_all()
        finally:
            if not queue:
                del receiver.pending[room_id]

    async def _deliver(self, receiver: _Receiver, event: WebhookEvent, body: bytes) -> None:
        """Until a 2xx, or given up `retry_for_seconds` after the event was made."""
        assert self._client is not None
        give_up_at = event.created_at + self._config.retry_for_seconds  # counted from the event, not the try
        delay = FIRST_RETRY_SECONDS
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._post(receiver, event, body)
            if outcome is None:
                self.statistics.delivered += 1
                return
            wait = min(delay, MAX_RETRY_SECONDS) * random.uniform(0.8, 1.2)
            if self._clock() + wait > give_up_at:
                self.statistics.failed += 1
                log.warning("webhook %s: gave up on %s %s of %s after %d attempts (%s)",
                            receiver.shown, event.type, event.id, event.room_id, attempt, outcome)  # fmt: skip
                return
            log.info("webhook %s: %s %s: %s; retrying in %.1f s", receiver.shown, event.type, event.id, outcome, wait)
            self.statistics.retried += 1
            delay *= 2
            await trio.sleep(wait)

    async def _post(self, receiver: _Receiver, event: WebhookEvent, body: bytes) -> str | None:
        """None on a 2xx, else why not."""
        assert self._client is not None
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_webhook(body, self._config.secret, timestamp=int(self._clock())),
            "X-BitBasel-Event-Id": event.id,
            "User-Agent": "bitbasel-media-server",
        }
        async with receiver.limiter:
            try:
                with trio.fail_after(self._config.timeout_seconds + 1):  # httpx's timeouts are per phase
                    response = await self._client.post(receiver.url, content=body, headers=headers)
            except (httpx.HTTPError, trio.TooSlowError, OSError) as exc:
                return f"{type(exc).__name__}: {exc}"[:200]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
