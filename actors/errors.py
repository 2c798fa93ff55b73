"""Refusals that actors send back as replies. Each carries its protocol error code."""

from __future__ import annotations


class ActorRefusal(Exception):
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RoomNotFound(ActorRefusal):
    code = "room_not_found"


class PeerNotFound(ActorRefusal):
    code = "not_found"


class RecordingNotFound(ActorRefusal):
    code = "not_found"


class KickedOut(ActorRefusal):
    code = "kicked"


class Capacity(ActorRefusal):
    code = "capacity"


class RoomFull(ActorRefusal):
    code = "room_full"


class HostTaken(ActorRefusal):
    code = "host_taken"


class Forbidden(ActorRefusal):
    code = "forbidden"


class ActorGone(ActorRefusal):
    """The actor stopped (or crashed) before it answered."""

    code = "unavailable"


class ActorCrashed(ActorGone):
    """The actor raised while it handled the request (it is restarted by its supervisor; the
    request was not, and may be sent again)."""


class ActorTimeout(ActorGone):
    """The actor did not answer within the caller's deadline."""
