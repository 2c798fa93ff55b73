"""Secrets where they meet the outside: compared safely, never shown.

- Comparing: `hmac.compare_digest` raises TypeError on a str that is not ASCII, and header
  values are whatever bytes a client sends (Quart hands them over latin-1 decoded). Compared
  as str, a wrong key or relay proof with one byte over 0x7F was an unauthenticated 500 with a
  traceback per request (issue 18 row 8). Here both sides are bytes, in constant time, so such
  a value is simply not the secret. Every comparison of a secret or proof goes through
  `same_secret`.
- Showing: a URL may carry a password (`redis://:password@host`, `https://user:pass@host`).
  `redact_url` hides it wherever a URL is logged, answered or put in an error message
  (issue 18 row 9).
"""

from __future__ import annotations

import hmac

REDACTED = "***"


def _as_bytes(value: str | bytes) -> bytes:
    # surrogatepass: a str that is not valid text still compares (unequal), it never raises
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def same_secret(given: str | bytes | None, expected: str | bytes) -> bool:
    """`given` is `expected`, compared in constant time as bytes (never raises on odd text)."""
    if given is None:
        return False
    return hmac.compare_digest(_as_bytes(given), _as_bytes(expected))


def bears_api_key(authorization: str | None, api_key: str) -> bool:
    """The `Authorization` header carries `Bearer <api_key>`, or no key is set (the API is open)."""
    return not api_key or same_secret(authorization or "", f"Bearer {api_key}")


def redact_url(url: str) -> str:
    """`url` with the password of its user info replaced by `***` (a user info without a
    password, e.g. a token as user name, is replaced whole). The authority ends at the first
    `/`, `?` or `#` after `://`, as RFC 3986 and `urllib.parse.urlsplit` read it: the password
    that a client of the URL would use is the one hidden. Never raises."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    user_info, at, host = rest[:end].rpartition("@")
    if not at:
        return url
    user, colon, _ = user_info.partition(":")
    hidden = f"{user}:{REDACTED}" if colon else REDACTED
    return f"{scheme}://{hidden}@{host}{rest[end:]}"
