"""JWTs: minting test tokens with the stack's secret."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jwt

from rtbook.secrets import Secret

__all__ = ["mint_jwt", "verify_jwt"]



# ------------------------------------------------------------------ tokens


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
    key = secret.reveal() if isinstance(secret, Secret) else secret
    return jwt.encode(claims, key, algorithm="HS256")


def verify_jwt(token: str, secret: str | None) -> tuple[dict[str, Any] | None, str]:
    """The claims and how the signature check went.

    The verdict is ``ok``, ``bad signature``, ``not a JWT``, ``no secret``, ``not HS256`` or
    ``invalid (<error>)``. Expiry is not judged here: callers compare ``exp`` with their own clock.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        return None, "not a JWT"
    if not isinstance(claims, dict):
        return None, "not a JWT"
    if not secret:
        return claims, "no secret"
    try:
        jwt.decode(token, secret, algorithms=["HS256", "HS384", "HS512"],
                   options={"verify_exp": False, "verify_aud": False, "verify_iat": False, "verify_nbf": False})
    except jwt.InvalidSignatureError:
        return claims, "bad signature"
    except jwt.InvalidAlgorithmError:
        return claims, "not HS256"
    except jwt.PyJWTError as exc:
        return claims, f"invalid ({type(exc).__name__})"
    return claims, "ok"
