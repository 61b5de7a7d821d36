"""``env.*`` checks: the API keys and secrets in ``.env``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rtbook.checks import _common
from rtbook.checks._common import result as _r
from rtbook.checks.compose import _DEMO_ISSUER, DEMO_VALUES, EXPIRY_WARN_DAYS, _stack
from rtbook.registry import register
from rtbook.results import CheckResult, Status
from rtbook.tokens import verify_jwt

if TYPE_CHECKING:
    from rtbook.config.stack import Stack
    from rtbook.target import Target



# ---------------------------------------------------------------- env.*


def _key_source(stack: Stack, names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        if stack.env.get(name):
            return stack.env[name], f".env {name}"
    gw = stack.gateway_service()
    if gw is not None:
        for name in names:
            if gw.environment.get(name):
                return gw.environment[name], f"services.{gw.name}.environment.{name}"
    return None


@register("env.api_keys", "ANON_KEY and SERVICE_ROLE_KEY are valid JWTs signed with JWT_SECRET", needs=("stack",))
def check_api_keys(target: Target, cid: str) -> CheckResult:
    """Both keys are HS256 JWTs signed with ``JWT_SECRET``, with ``role`` and an ``exp`` not near."""
    stack = _stack(target)
    secret_src = _key_source(stack, ("JWT_SECRET",))
    rt = stack.realtime_service()
    if secret_src is None and rt is not None and rt.environment.get("API_JWT_SECRET"):
        secret_src = (rt.environment["API_JWT_SECRET"], f"services.{rt.name}.environment.API_JWT_SECRET")
    if stack.env_file is None and secret_src is None:
        return _r(cid, Status.FAIL, f"The stack has no .env in {stack.root}, so ANON_KEY, SERVICE_ROLE_KEY and "
                  "JWT_SECRET are empty.",
                  remedy=f"cp {stack.root}/env.example {stack.root}/.env and generate JWT_SECRET, ANON_KEY and "
                  "SERVICE_ROLE_KEY (utils/generate-keys.sh in the official repo).")
    secret = secret_src[0] if secret_src else None
    now = _common.now()
    lines = [f"JWT secret: {secret_src[1] if secret_src else 'not found'}"]
    fails: list[str] = []
    warns: list[str] = []
    remedies: list[str] = []
    evidence: dict[str, Any] = {}
    for names, role in ((("ANON_KEY", "SUPABASE_ANON_KEY"), "anon"),
                        (("SERVICE_ROLE_KEY", "SUPABASE_SERVICE_KEY"), "service_role")):
        found = _key_source(stack, names)
        label = names[0]
        if found is None:
            fails.append(f"{label} is not set")
            remedies.append(f"set {label} in .env to a JWT with role {role} signed with JWT_SECRET")
            continue
        token, where = found
        claims, sig = verify_jwt(token, secret)
        if claims is None:
            fails.append(f"{label} ({where}) is not a JWT")
            remedies.append(f"replace {label} in .env with a JWT (role {role}) signed with JWT_SECRET")
            continue
        exp = claims.get("exp")
        info: dict[str, Any] = {"role": claims.get("role"), "iss": claims.get("iss"), "signature": sig}
        if isinstance(exp, int | float):
            info["exp"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(exp))
        evidence[label] = info
        lines.append(f"{label} ({where}): role={claims.get('role')!r}, exp={info.get('exp', 'missing')}, "
                     f"signature {sig}")
        if sig == "bad signature":
            fails.append(f"{label} is not signed with the JWT secret ({secret_src[1] if secret_src else ''})")
            remedies.append(f"re-sign {label} with the current JWT_SECRET (or restore the secret it was signed with)")
        elif sig not in ("ok", "no secret"):
            fails.append(f"{label}: {sig}")
            remedies.append(f"regenerate {label} as an HS256 JWT signed with JWT_SECRET")
        if claims.get("role") != role:
            fails.append(f"{label} has role {claims.get('role')!r}, expected {role!r}")
            remedies.append(f"regenerate {label} with the claim \"role\": \"{role}\"")
        if not isinstance(exp, int | float):
            fails.append(f"{label} has no numeric exp claim (Realtime requires role and exp)")
            remedies.append(f"regenerate {label} with an exp claim")
        elif exp <= now:
            fails.append(f"{label} expired on {info['exp']}")
            remedies.append(f"generate a new {label} with a later exp, signed with JWT_SECRET")
        elif exp - now < EXPIRY_WARN_DAYS * 86400:
            warns.append(f"{label} expires on {info['exp']} (in {int((exp - now) // 86400)} days)")
            remedies.append(f"generate a new {label} with a later exp before {info['exp']}")
    detail = "\n".join(lines)
    if fails:
        return _r(cid, Status.FAIL, "API keys are unusable: " + "; ".join(fails) + ".", detail=detail,
                  remedy="In .env: " + "; ".join(dict.fromkeys(remedies)) + ". Then restart the stack.",
                  evidence=evidence)
    if warns:
        return _r(cid, Status.WARN, "; ".join(warns) + ".", detail=detail,
                  remedy="In .env: " + "; ".join(dict.fromkeys(remedies)) + ".", evidence=evidence)
    note = f", signed with {secret_src[1]}" if secret_src else " (signature not verified: no JWT_SECRET found)"
    expiries = ", ".join(f"{k} until {v['exp']}" for k, v in evidence.items() if v.get("exp"))
    return _r(cid, Status.PASS, f"ANON_KEY and SERVICE_ROLE_KEY carry the right roles and a future exp "
              f"({expiries}){note}.",
              detail=detail, evidence=evidence)


@register("env.default_secrets", "No public example secrets in use", needs=("stack",))
def check_default_secrets(target: Target, cid: str) -> CheckResult:
    """Warn for every secret still set to a value published in an ``env.example``."""
    stack = _stack(target)
    found: list[str] = []
    for name, values in DEMO_VALUES.items():
        if stack.env.get(name) in values:
            found.append(f".env {name}")
    for svc in stack.services.values():
        for name in ("SECRET_KEY_BASE", "API_JWT_SECRET", "POSTGRES_PASSWORD", "DASHBOARD_PASSWORD"):
            value = svc.environment.get(name)
            demo = DEMO_VALUES.get("JWT_SECRET" if name == "API_JWT_SECRET" else name, ())
            if value and value in demo and value not in stack.env.values():
                found.append(f"services.{svc.name}.environment.{name} (hard-coded)")
    for name in ("ANON_KEY", "SERVICE_ROLE_KEY"):
        token = stack.env.get(name)
        if token:
            claims, _ = verify_jwt(token, None)
            if claims and claims.get("iss") == _DEMO_ISSUER:
                found.append(f".env {name} (the demo key, iss supabase-demo)")
    if not stack.env_file:
        return _r(cid, Status.SKIP if not found else Status.WARN,
                  "No .env to inspect" + (f"; hard-coded example values: {', '.join(found)}." if found else "."))
    if found:
        return _r(cid, Status.WARN, f"{len(found)} example secret(s) still in use: {', '.join(found)}.",
                  detail="These values are published in env.example files; anyone can sign tokens or log in "
                  "with them.",
                  remedy="Generate new values in .env (JWT_SECRET: openssl rand -base64 48, then re-sign ANON_KEY "
                  "and SERVICE_ROLE_KEY; POSTGRES_PASSWORD, DASHBOARD_PASSWORD, SECRET_KEY_BASE, VAULT_ENC_KEY, "
                  "PG_META_CRYPTO_KEY: random strings) before exposing the stack.",
                  evidence={"found": found})
    return _r(cid, Status.PASS, "No public example secret found in .env or the compose environment.")
