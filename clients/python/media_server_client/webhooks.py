"""Webhook signatures: what the server signs, and what a receiver checks (stdlib only).

Every webhook POST carries

    X-BitBasel-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

`verify_webhook(body, header, secret)` returns the event (a dict) if the signature is
right and `t` is within `tolerance_seconds` of now (a replay of an old delivery fails),
else raises `WebhookSignatureError`, and nothing else whatever it is given (a receiver that
answers that error with a 4xx never answers a forged delivery with a 500). Deliveries are at
least once: de-duplicate by the event's `id`. `sign_webhook` signs as the server does (for a
receiver's own tests).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from typing import Any

SIGNATURE_HEADER = "X-BitBasel-Signature"
DEFAULT_TOLERANCE_SECONDS = 300
TIMESTAMP = re.compile(r"[0-9]{1,15}")  # ASCII digits only: int() also takes "1_000", " 1" and other scripts' digits


class WebhookSignatureError(ValueError):
    """The delivery is not from the server, was altered, is too old (a replay) or cannot be read;
    or the receiver's own arguments cannot check it (no secret, a `now` that is not a number)."""


def _digest(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_webhook(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The `X-BitBasel-Signature` value for `body`, as the server signs it (e.g. to test a receiver)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(secret.encode(), t, body)}"


def verify_webhook(
    body: bytes | str,
    header: str | None,
    secret: str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The event of a genuine, recent delivery; `WebhookSignatureError` otherwise, for any
    input (wrong types included): never another exception.

    `body` must be the raw request body (bytes as received, before any JSON parsing)."""
    raw = _raw_body(body)
    key = _secret_key(secret)
    timestamp, signatures = _parse_header(header)
    current = time.time() if now is None else _finite(now, "now")
    if abs(current - timestamp) > _finite(tolerance_seconds, "tolerance_seconds", minimum=0):
        raise WebhookSignatureError(f"signature timestamp is {current - timestamp:.0f} s off (replay?)")
    expected = _digest(key, timestamp, raw).encode()
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise WebhookSignatureError("signature does not match")
    return _event(raw)


def _raw_body(body: object) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        try:
            return body.encode()
        except UnicodeEncodeError:  # lone surrogates: not a body anyone sent
            raise WebhookSignatureError("the body is not valid text") from None
    raise WebhookSignatureError(f"the body must be bytes (as received), not {type(body).__name__}")


def _secret_key(secret: object) -> bytes:
    if not isinstance(secret, str) or not secret:
        raise WebhookSignatureError("no webhook secret configured")
    try:
        return secret.encode()
    except UnicodeEncodeError:
        raise WebhookSignatureError("the webhook secret is not valid text") from None


def _parse_header(header: object) -> tuple[int, list[bytes]]:
    """`t=<unix seconds>,v1=<hex>[,v1=<hex>...]` -> (t, the v1 values as bytes). A `v1` that is
    not ASCII cannot be a hex digest: it is left out (hmac.compare_digest raises on it)."""
    if not isinstance(header, str) or not header:
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    given_t = fields.get("t", [""])[0]
    if not TIMESTAMP.fullmatch(given_t):
        raise WebhookSignatureError("malformed signature header (no t=)")
    return int(given_t), [value.encode("ascii") for value in fields.get("v1", []) if value.isascii()]


def _finite(value: object, name: str, *, minimum: float = -math.inf) -> float:
    """A receiver's own `now` or `tolerance_seconds`: a finite number (NaN would pass every check)."""
    refused = WebhookSignatureError(f"{name} must be a finite number (a {type(value).__name__} was given)")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise refused
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        raise refused from None
    if not minimum <= number < math.inf:
        raise refused
    return number


def _event(raw: bytes) -> dict[str, Any]:
    """The signed body's event; what the server never sends (not a JSON object) is refused too."""
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError):  # ValueError: not JSON, not UTF-8; RecursionError: nested too deep
        raise WebhookSignatureError("the body is not a JSON event") from None
    if not isinstance(event, dict):
        raise WebhookSignatureError("the body is not a JSON object")
    return event
