"""`config.toml`, decoded with msgspec into typed, frozen structs.

A missing key takes its default and a missing section all of its defaults. An
unknown section or key, a wrong type or an out-of-range value raises
`ConfigError` with a message that names the key (`app.py` exits with code 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from core.credentials import redact_url

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]

MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "0.0.0.0"
    port: Port = 8082
    max_connections: Positive = 1000
    certfile: str = ""
    keyfile: str = ""
    # messages per second one WebSocket may send before `rate_limited` (1008)
    max_messages_per_second: Positive = 50
    # a WebSocket session silent this long is closed with `timeout` (4408)
    silence_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    # a peer connection not connected this long after the answer ends its session (`timeout`, 4408)
    connect_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0

    def __post_init__(self) -> None:
        if bool(self.certfile) != bool(self.keyfile):
            raise ValueError("certfile and keyfile must be set together")

    @property
    def tls(self) -> bool:
        return bool(self.certfile)


class RoomsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_rooms: Positive = 100
    max_viewers_per_room: Positive = 100
    idle_timeout_seconds: Positive = 300


VideoCodec = Literal["VP8", "H264"]


class VideoConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # the video codecs a host may publish, in the server's preference (issue 22); the seed's
    # `codec = "VP8"` stays valid and means ["VP8"]
    codecs: list[VideoCodec] = msgspec.field(default_factory=lambda: ["VP8", "H264"])
    codec: Literal["VP8"] | None = None

    def __post_init__(self) -> None:
        if not self.codecs or len(set(self.codecs)) != len(self.codecs):
            raise ValueError("codecs must name each of VP8, H264 at most once, and at least one")

    @property
    def host_codecs(self) -> tuple[str, ...]:
        """The codecs a host may publish, in preference (``codec`` given: VP8 alone)."""
        return ("VP8",) if self.codec is not None else tuple(self.codecs)

    target_bitrate_kbps: Annotated[int, msgspec.Meta(ge=30, le=100_000)] = 1500
    max_framerate: Annotated[int, msgspec.Meta(ge=1, le=120)] = 30


class AudioConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    codec: Literal["Opus"] = "Opus"
    bitrate_kbps: Annotated[int, msgspec.Meta(ge=6, le=510)] = 128
    sample_rate: Literal[48000] = 48000


DEFAULT_UDP_PORT = 50000


class IceConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host_addresses: list[str] = msgspec.field(default_factory=list)
    # every peer connection's media goes through this one UDP port (0 = any free port)
    udp_port: Port = DEFAULT_UDP_PORT
    announced_address: str = ""
    # handed to clients in `joined.ice_servers` (the server itself is ICE-lite and contacts none)
    stun_servers: list[str] = msgspec.field(default_factory=list)
    # TURN for clients behind NATs that need a relay (coturn with `use-auth-secret`): the URLs,
    # coturn's `static-auth-secret`, and how long each session's credentials stay valid
    turn_servers: list[str] = msgspec.field(default_factory=list)
    turn_secret: str = ""
    turn_credential_ttl_seconds: Annotated[int, msgspec.Meta(ge=60, le=7 * 86400)] = 86400
    # a connected peer from which nothing (ICE check, DTLS, RTP, RTCP) arrives this long has lost
    # consent (RFC 7675): its session ends as failed, so a vanished viewer stops counting
    consent_timeout_seconds: Annotated[float, msgspec.Meta(ge=1, le=600)] = 30.0

    def __post_init__(self) -> None:
        for url in self.stun_servers:
            if not url.startswith(("stun:", "stuns:")):
                raise ValueError(f"stun server {url!r} must start with 'stun:'")
        for url in self.turn_servers:
            if not url.startswith(("turn:", "turns:")):
                raise ValueError(f"turn server {url!r} must start with 'turn:' or 'turns:'")
        if self.turn_servers and not self.turn_secret:
            raise ValueError("turn_servers needs turn_secret (coturn's static-auth-secret)")


class AuthConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    secret: str = ""
    api_key: str = ""

    def __post_init__(self) -> None:
        if self.secret and len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes (or empty)")


class WebhooksConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # each event of a room's life is POSTed (JSON, signed with `secret`) to every URL
    urls: list[str] = msgspec.field(default_factory=list)
    secret: str = ""
    viewer_events: bool = False  # also viewer_joined / viewer_left
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    # an undelivered event is retried (backoff) for this long after it happened, then given up
    retry_for_seconds: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 300.0
    max_pending: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000  # per URL; more are dropped

    def __post_init__(self) -> None:
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook url {redact_url(url)!r} must start with http:// or https://")
        if self.urls and len(self.secret.encode()) < 16:
            raise ValueError("urls needs a secret of at least 16 bytes (receivers verify the signatures)")


class RecordingsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # recordings (WebM, the host's VP8 + Opus as sent) go to <directory>/<room_id>/<recording_id>.webm
    directory: str = "recordings"
    max_seconds: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] = 4 * 3600.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1_000_000)] = 4 * 1024**3


class ClusterConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # the room directory: "" = none (rooms live in memory only); a path = an SQLite file, so a
    # restarted server knows every room the backend created and clients resume in them
    state_path: str = ""
    # media workers: processes with a UDP port each (udp_port + i); 1 = one process, 0 = one per core
    workers: Annotated[int, msgspec.Meta(ge=0, le=64)] = 1
    # several nodes sharing rooms: "" = no cluster; "redis://host:port/db" (or redis://:password@...)
    redis_url: str = ""
    # this node in the cluster: its name ("" = host:port of node_url) and the base URL the other
    # nodes relay to and clients are sent to ("" = http(s)://<announced_address or host>:<port>)
    node_id: str = ""
    node_url: str = ""
    # a node whose heartbeat is older than this is dead: its rooms move to the next node a client reaches
    node_ttl_seconds: Annotated[float, msgspec.Meta(ge=1, le=60)] = 3.0
    # a room's viewers per media worker: past it, its next viewers go to another worker of the
    # node, fed by a relay of the room's media (actors/relays.py); 0 = all on the room's worker
    room_viewers_per_worker: Annotated[int, msgspec.Meta(ge=0)] = 200

    def __post_init__(self) -> None:
        if self.redis_url and not self.redis_url.startswith("redis://"):
            raise msgspec.ValidationError("must be a redis://host:port/db URL - at `$.cluster.redis_url`")


class MetricsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # GET /metrics (Prometheus): "off" (404), "open" (no key), "api_key" (the REST API's key, when set)
    access: Literal["off", "open", "api_key"] = "api_key"


class DebugConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    fault_injection: bool = False


class Config(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    rooms: RoomsConfig = msgspec.field(default_factory=RoomsConfig)
    video: VideoConfig = msgspec.field(default_factory=VideoConfig)
    audio: AudioConfig = msgspec.field(default_factory=AudioConfig)
    ice: IceConfig = msgspec.field(default_factory=IceConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    webhooks: WebhooksConfig = msgspec.field(default_factory=WebhooksConfig)
    recordings: RecordingsConfig = msgspec.field(default_factory=RecordingsConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    debug: DebugConfig = msgspec.field(default_factory=DebugConfig)


def _key_path(message: str) -> str:
    """msgspec says `... - at `$.server.port``; turn that into `server.port`."""
    marker = "- at `$."
    if marker in message:
        return message.split(marker, 1)[1].rstrip("`")
    return ""


def parse_config(text: str | bytes, *, source: str = "config") -> Config:
    try:
        return msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        message = str(exc)
        key = _key_path(message)
        detail = message.split(" - at ", 1)[0]
        if detail.startswith("Object contains unknown field"):
            unknown = detail.split("`")[1]
            key = f"{key}.{unknown}" if key else unknown
            detail = "unknown key"
        raise ConfigError(f"{source}: {key or '(top level)'}: {detail}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc


def load_config(path: Path) -> Config:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_config(text, source=str(path))
