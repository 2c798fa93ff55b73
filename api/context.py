"""What the handlers share: the config, the supervisor's client, the token issuer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import trio

from actors.supervisor import SupervisorClient
from api.media import MediaConnections
from api.metrics import LoopLag
from api.thumbnails import Thumbnails
from core.config import Config
from core.tokens import TokenIssuer
from services.room_store import RoomStore
from services.webhooks import Webhooks
from transport.relay_port import RelayPort


@dataclass
class ConnectionGate:
    """Counts simultaneous WebSocket sessions against `max_connections`
    (Hypercorn has no connection cap of its own)."""

    limit: int
    open: int = 0
    refused: int = 0
    close_codes: Counter[int] = field(default_factory=Counter)  # closes the server sent, by code
    _left: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)

    def try_enter(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1
        self._left.unpark_all()

    async def wait_all_left(self) -> None:
        """Return once no session is open (bound it with a deadline)."""
        while self.open:
            await self._left.park()


@dataclass
class ServerContext:
    config: Config
    supervisor: SupervisorClient
    tokens: TokenIssuer | None
    media: MediaConnections
    webhooks: Webhooks
    store: RoomStore | None = None  # the room directory's writer (`[cluster] state_path` or redis_url)
    worker_index: int | None = None  # a media worker of a front (front/app.py): its internal routes
    relay_port: RelayPort | None = None  # a media worker's: rooms across workers and nodes (its counts)
    sessions: ConnectionGate = field(init=False)
    loop_lag: LoopLag = field(default_factory=LoopLag)
    thumbnails: Thumbnails = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = ConnectionGate(limit=self.config.server.max_connections)
        self.thumbnails = Thumbnails(self.supervisor)
