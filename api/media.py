"""Creating server-side peer connections from the config (transport/ does the work)."""

from __future__ import annotations

from core.config import Config
from transport.connections import PublisherConnection, ViewerConnection
from transport.settings import IceSettings, MediaSettings, TransportCounters


class AiortcConnections:
    """The peer actors' ConnectionFactory: aiortc connections set up per the config."""

    def __init__(self, config: Config) -> None:
        self._ice = IceSettings(
            host_addresses=list(config.ice.host_addresses),
            announced_address=config.ice.announced_address,
            stun_servers=list(config.ice.stun_servers),
            consent_timeout_seconds=config.ice.consent_timeout_seconds,
        )
        self._media = MediaSettings(
            video_bitrate_kbps=config.video.target_bitrate_kbps,
            max_framerate=config.video.max_framerate,
            audio_bitrate_kbps=config.audio.bitrate_kbps,
        )

    def publisher(self, counters: TransportCounters, *, label: str) -> PublisherConnection:
        return PublisherConnection(self._ice, self._media, counters, label=label)

    def viewer(self, counters: TransportCounters, *, label: str) -> ViewerConnection:
        return ViewerConnection(self._ice, self._media, counters, label=label)
