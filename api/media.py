"""The media port and the server-side peer connections on it, set up from the config."""

from __future__ import annotations

import logging

from aioice.ice import get_host_addresses

from core.config import Config, ConfigError
from transport.dtls import process_certificate
from transport.media_port import MediaPort
from transport.peer_connection import PeerConnection
from transport.settings import IceSettings, MediaSettings, TransportCounters

log = logging.getLogger("bitbasel.media")


def open_media_port(config: Config) -> MediaPort:
    """Bind `[ice] udp_port` on each of `[ice] host_addresses` (or every interface's IPv4
    address). Raises ConfigError naming the keys when the port cannot be bound."""
    addresses = list(config.ice.host_addresses) or get_host_addresses(use_ipv4=True, use_ipv6=False)
    if not addresses:
        log.warning("no network interface but loopback: media on 127.0.0.1 only")
        addresses = ["127.0.0.1"]
    try:
        port = MediaPort(addresses, config.ice.udp_port, announced_address=config.ice.announced_address)
    except OSError as exc:
        raise ConfigError(
            f"ice.udp_port/ice.host_addresses: cannot bind UDP {config.ice.udp_port} on {addresses}: {exc.strerror}"
        ) from exc
    log.info("media on UDP port %d of %s", port.port, ", ".join(addresses))
    return port


class MediaConnections:
    """The peer actors' ConnectionFactory: peer connections on the process's media port."""

    def __init__(self, config: Config, port: MediaPort) -> None:
        self.port = port
        self._ice = IceSettings(consent_timeout_seconds=config.ice.consent_timeout_seconds)
        self._media = MediaSettings(
            video_bitrate_kbps=config.video.target_bitrate_kbps,
            max_framerate=config.video.max_framerate,
            audio_bitrate_kbps=config.audio.bitrate_kbps,
            video_codecs=config.video.host_codecs,
        )

    def publisher(self, counters: TransportCounters, *, label: str) -> PeerConnection:
        return PeerConnection(self.port, process_certificate(), "host", self._ice, self._media, counters, label=label)

    def viewer(self, counters: TransportCounters, *, label: str) -> PeerConnection:
        certificate = process_certificate()  # one per process, renewed before it expires
        return PeerConnection(self.port, certificate, "viewer", self._ice, self._media, counters, label=label)
