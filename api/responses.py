"""JSON responses and the one error shape: {"error": CODE, "message": TEXT}."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from quart import Response, request

from api.schemas import ErrorResponse

T = TypeVar("T")

MAX_BODY_BYTES = 1024 * 1024

STATUS_OF_CODE = {
    "bad_request": 400,
    "unauthorized": 401,
    "room_not_found": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "too_large": 413,
    "capacity": 503,
    "unavailable": 503,
    "internal": 500,
}


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return STATUS_OF_CODE[self.code]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status=status, content_type="application/json")


def error_response(code: str, message: str) -> Response:
    return json_response(ErrorResponse(error=code, message=message), STATUS_OF_CODE[code])


async def decode_body(kind: type[T]) -> T:
    """The request body decoded as `kind`, or ApiError(bad_request / too_large)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError("too_large", f"body over {MAX_BODY_BYTES} bytes")
    body = await request.get_data(cache=False, as_text=False)
    if len(body) > MAX_BODY_BYTES:
        raise ApiError("too_large", f"body over {MAX_BODY_BYTES} bytes")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError("bad_request", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise ApiError("bad_request", f"malformed JSON: {exc}") from exc
    except RecursionError as exc:  # msgspec recurses even into ignored fields: ~1000 `[` are enough
        raise ApiError("bad_request", "malformed JSON: nested too deeply") from exc
