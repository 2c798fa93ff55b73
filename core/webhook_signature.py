"""The signature of a webhook delivery (the server's side; stdlib only).

Every webhook POST carries

    X-BitBasel-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

Receivers check it with the client package's `media_server_client.verify_webhook`
(clients/python), which the server does not import; tests/test_webhooks.py checks that
what this module signs verifies there.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-BitBasel-Signature"


def sign_webhook(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The `X-BitBasel-Signature` value for `body`, signed at `timestamp` (default: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"
