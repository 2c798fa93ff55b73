"""Typed errors: one class per error code the server answers with."""

from __future__ import annotations


class MediaServerError(Exception):
    """The server refused the request (or could not be reached: status 0, code "unreachable")."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class BadRequestError(MediaServerError):
    pass


class UnauthorizedError(MediaServerError):
    pass


class RoomNotFoundError(MediaServerError):
    pass


class CapacityError(MediaServerError):
    pass


ERROR_CLASSES: dict[str, type[MediaServerError]] = {
    "bad_request": BadRequestError,
    "too_large": BadRequestError,
    "unauthorized": UnauthorizedError,
    "room_not_found": RoomNotFoundError,
    "capacity": CapacityError,
}
