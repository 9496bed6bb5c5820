"""Secrets kept out of messages: the one helper every printed URL (Qdrant, the registry database) goes through.

    redact_url("http://admin:pw@qdrant:6333/?api-key=k")  -> "http://admin:***@qdrant:6333/?api-key=***"
    redact("cannot reach http://admin:pw@qdrant:6333 ...", secrets=["k"])  -> every URL in a text, and the given
                                                                              secret values, masked

A password in the user-info part is masked (the user name stays); a bare user-info of a web URL (``https://TOKEN@``)
is a token and masked whole; query parameters that carry credentials (api-key, token, password, secret, ...) keep
their name and lose their value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>]*)")
_SECRET_PARAMETER = re.compile(
    r"(?P<name>(?:api[-_]?key|apikey|key|token|access[-_]?token|auth|password|passwd|pwd|secret|signature|sig)=)"
    r"(?P<value>[^&#\s]*)",
    re.IGNORECASE,
)
_WEB_SCHEMES = ("http://", "https://", "grpc://", "grpcs://", "ws://", "wss://")


def redact_url(url: str) -> str:
    """``url`` with its password (or a bare token), and the values of credential query parameters, masked."""
    return _URL.sub(_redacted, str(url))


def redact(text: str, *, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every URL redacted (:func:`redact_url`) and each of ``secrets`` (literal values) masked."""
    result = _URL.sub(_redacted, str(text))
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        result = result.replace(secret, MASK)
    return result


def _redacted(match: re.Match[str]) -> str:
    scheme, rest = match["scheme"], match["rest"]
    query = min([i for i in (rest.find("?"), rest.find("#")) if i != -1], default=len(rest))
    at = rest.rfind("@", 0, query)  # the last '@' before the query: a password may hold '/' or '@'
    if at != -1:
        userinfo, rest = rest[:at], rest[at + 1:]
        if ":" in userinfo:
            userinfo = f"{userinfo.split(':', 1)[0]}:{MASK}"
        elif scheme.lower() in _WEB_SCHEMES:
            userinfo = MASK
        rest = f"{userinfo}@{rest}"
    head, sep, tail = rest.partition("?") if "?" in rest else rest.partition("#")
    if sep:
        tail = _SECRET_PARAMETER.sub(lambda m: f"{m['name']}{MASK}", tail)
    return f"{scheme}{head}{sep}{tail}"
