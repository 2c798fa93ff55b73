"""Webhook signatures: what the server signs, and what a receiver checks (stdlib only).

Every webhook POST carries

    X-BitBasel-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

`verify_webhook(body, header, secret)` returns the event (a dict) if the signature is
right and `t` is within `tolerance_seconds` of now (a replay of an old delivery fails),
else raises `WebhookSignatureError`. Deliveries are at least once: de-duplicate by the
event's `id`. `sign_webhook` signs as the server does (for a receiver's own tests).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

SIGNATURE_HEADER = "X-BitBasel-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookSignatureError(ValueError):
    """The delivery is not from the server, was altered, or is too old (a replay)."""


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_webhook(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The `X-BitBasel-Signature` value for `body`, as the server signs it (e.g. to test a receiver)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(secret, t, body)}"


def verify_webhook(
    body: bytes | str,
    header: str | None,
    secret: str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The event of a genuine, recent delivery; `WebhookSignatureError` otherwise.

    `body` must be the raw request body (bytes as received, before any JSON parsing)."""
    if not secret:
        raise WebhookSignatureError("no webhook secret configured")
    if not header:
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    raw = body.encode() if isinstance(body, str) else body
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        raise WebhookSignatureError("malformed signature header (no t=)") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookSignatureError(f"signature timestamp is {current - timestamp:.0f} s off (replay?)")
    expected = _digest(secret, timestamp, raw)
    if not any(hmac.compare_digest(expected, given) for given in fields.get("v1", [])):
        raise WebhookSignatureError("signature does not match")
    event: dict[str, Any] = json.loads(raw)
    return event
