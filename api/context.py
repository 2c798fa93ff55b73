"""What the handlers share: the config, the supervisor's client, the token issuer."""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.supervisor import SupervisorClient
from core.config import Config
from core.tokens import TokenIssuer


@dataclass
class ConnectionGate:
    """Counts simultaneous WebSocket sessions against `max_connections`
    (Hypercorn has no connection cap of its own)."""

    limit: int
    open: int = 0
    refused: int = 0

    def try_enter(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1


@dataclass
class ServerContext:
    config: Config
    supervisor: SupervisorClient
    tokens: TokenIssuer | None
    sessions: ConnectionGate = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = ConnectionGate(limit=self.config.server.max_connections)
