"""`GET /ws`: WebSocket signaling. Each session is a peer actor (actors/peer.py)."""

from __future__ import annotations

import logging
from collections import Counter

from quart import Blueprint, websocket

from actors.peer import CLOSE_POLICY, PeerEnvironment, PeerSession
from api.context import ConnectionGate
from core.signaling import Error, encode

log = logging.getLogger("bitbasel.ws")


class QuartSocket:
    """Quart's websocket as the peer actor's SignalingSocket (its closes counted by code)."""

    def __init__(self, close_codes: Counter[int]) -> None:
        self._close_codes = close_codes

    async def receive(self) -> str | bytes:
        return await websocket.receive()

    async def send(self, text: str) -> None:
        await websocket.send(text)

    async def close(self, code: int) -> None:
        self._close_codes[code] += 1
        await websocket.close(code)


def create_ws_blueprint(env: PeerEnvironment, gate: ConnectionGate) -> Blueprint:
    signaling = Blueprint("signaling", __name__)

    @signaling.websocket("/ws")
    async def ws() -> None:
        if not gate.try_enter():
            if gate.refused == 1 or gate.refused % 100 == 0:
                log.warning("max_connections (%d) reached: refusing sessions (%d so far)", gate.limit, gate.refused)
            await websocket.send(encode(Error(code="rate_limited", message="max_connections reached")))
            gate.close_codes[CLOSE_POLICY] += 1
            await websocket.close(CLOSE_POLICY)
            return
        try:
            await PeerSession(env, QuartSocket(gate.close_codes)).run()
        finally:
            gate.leave()

    return signaling
