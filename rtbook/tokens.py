"""JWTs: minting test tokens with the stack's secret, and the one verifier of a key against a secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from rtbook.secrets import Secret

__all__ = ["mint_jwt", "verify_jwt"]


def mint_jwt(
    secret: Secret | str,
    role: str,
    *,
    expires_in: float = 300,
    sub: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Sign an HS256 JWT with ``role`` and ``exp`` (now + ``expires_in``; negative for an expired one).

    Realtime uses the secret string's raw bytes as the HMAC key (realtime-facts §6).
    """
    now = int(time.time())
    claims: dict[str, Any] = {"role": role, "iat": now - 5, "exp": int(now + expires_in), "iss": "rtbook"}
    if sub is not None:
        claims["sub"] = sub
    claims.update(extra or {})
    import jwt  # PyJWT (and the cryptography package it loads) only when a live check mints a token

    key = secret.reveal() if isinstance(secret, Secret) else secret
    return jwt.encode(claims, key, algorithm="HS256")


_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _segment(text: str) -> bytes:
    """One base64url JWT segment (unpadded, as RFC 7515 writes it) as bytes."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def verify_jwt(token: str, secret: str | None) -> tuple[dict[str, Any] | None, str]:
    """The claims and how the signature check went.

    The verdict is ``ok``, ``bad signature``, ``not a JWT``, ``no secret``, ``not HS256`` (any
    algorithm but HS256/384/512, which is all Realtime accepts for a shared secret) or ``invalid
    (<error>)``. Expiry is not judged here: callers compare ``exp`` with their own clock.

    The check is HMAC over the first two segments, the same as PyJWT's (tests compare the two);
    it is done here with the standard library so that a file check does not pay PyJWT's import of
    the whole ``cryptography`` package.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None, "not a JWT"
    try:
        header = json.loads(_segment(parts[0]))
        claims = json.loads(_segment(parts[1]))
    except (ValueError, UnicodeDecodeError):
        return None, "not a JWT"
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None, "not a JWT"
    if not secret:
        return claims, "no secret"
    digest = _HMAC.get(str(header.get("alg")))
    if digest is None:
        return claims, "not HS256"
    try:
        signature = _segment(parts[2])
    except ValueError:
        return claims, "invalid (DecodeError)"
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), digest).digest()
    return claims, "ok" if hmac.compare_digest(signature, expected) else "bad signature"
