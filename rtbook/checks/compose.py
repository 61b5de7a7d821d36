"""Static checks of the compose file and ``.env``: the ``compose.*`` and ``env.*`` ids.

The Realtime environment rules are also exposed on a plain mapping through
:func:`evaluate_realtime_env`, so the Docker checks can apply them to a running container.
Secret values never appear in a result: mismatches are described by length and a short
SHA-256 fingerprint, and the runner redacts every result with the stack's redactor anyway.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from rtbook.checks import _common
from rtbook.checks._common import result as _r
from rtbook.config.gateway import realtime_upstream, tenant_of
from rtbook.config.images import ImageVersion, parse_version
from rtbook.registry import register
from rtbook.results import CheckResult, Status
from rtbook.tokens import verify_jwt

if TYPE_CHECKING:
    from rtbook.config.stack import Service, Stack
    from rtbook.target import Target

__all__ = ["DEMO_VALUES", "evaluate_realtime_env"]


DEFAULT_TENANT = "realtime-dev"
METRICS_SECRET_SINCE = (2, 78, 5)
TENANT_NAME_SINCE = (2, 33, 68)
PUBLIC_DB_ENC_KEY = "supabaserealtime"
EXPIRY_WARN_DAYS = 30

# Public example values shipped in env.example files (supabase/supabase docker/.env.example and copies).
DEMO_VALUES: dict[str, tuple[str, ...]] = {
    "JWT_SECRET": (
        "your-super-secret-jwt-token-with-at-least-32-characters-long",
        "your-super-secret-jwt-token-exactly-40-characters-long",
        "super-secret-jwt-token-with-at-least-32-characters-long",
    ),
    "POSTGRES_PASSWORD": ("your-super-secret-and-long-postgres-password",),
    "DASHBOARD_PASSWORD": ("this_password_is_insecure_and_should_be_updated",),
    "SECRET_KEY_BASE": ("UpNVntn3cDxHJpq99YMc1T1AQgQpc8kfYTuRgBiYa15BLrx8etQoXz3gZv1/u2oq",),
    "VAULT_ENC_KEY": ("your-encryption-key-32-chars-min", "your-32-character-encryption-key"),
    "PG_META_CRYPTO_KEY": ("your-encryption-key-32-chars-min",),
    "REALTIME_DB_ENC_KEY": ("your16charkey123", PUBLIC_DB_ENC_KEY),
    "DB_SUPERUSER_PASSWORD": ("db-superuser-password",),
}
_DEMO_ISSUER = "supabase-demo"


# ====================================================================== helpers


def _fp(value: str) -> str:
    """A short fingerprint that identifies a secret without revealing it."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:8]


def _desc(value: str) -> str:
    return f"{len(value)} characters, {_fp(value)}"


def _looks_external(host: str) -> bool:
    if "." in host or host in ("host.docker.internal", "localhost"):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


# ====================================================================== Realtime env rules


@dataclass(frozen=True)
class _EnvContext:
    env: Mapping[str, str]
    raw: Mapping[str, Any] | None
    version: ImageVersion
    source: str
    where: str  # e.g. "services.realtime.environment" for remedies
    secret_peers: tuple[tuple[str, str], ...]  # (label, value) that must equal API_JWT_SECRET
    db_names: tuple[str, ...] | None  # names that resolve to the database service (None: unknown)
    command: str = ""


def evaluate_realtime_env(
    env: Mapping[str, str],
    *,
    image: str | None,
    auth_env: Mapping[str, str] | None = None,
    source: str = "the Realtime environment",
) -> list[CheckResult]:
    """Apply the Realtime environment rules to a plain mapping (e.g. a running container's env).

    Rules (result ids): ``compose.realtime.jwt_secret``, ``.metrics_jwt_secret``, ``.db_enc_key``,
    ``.secret_key_base``, ``.search_path``, ``.seed_self_host``, ``.db_connection``.

    Args:
        env: the Realtime variables.
        image: the image reference, for version-dependent rules (unknown: assumed newest).
        auth_env: variables whose JWT secret must equal ``API_JWT_SECRET`` (``JWT_SECRET``,
            ``GOTRUE_JWT_SECRET`` or ``PGRST_JWT_SECRET``), e.g. the stack's ``.env``.
        source: how to name where ``env`` came from in the results.
    """
    peers: list[tuple[str, str]] = []
    for name in ("JWT_SECRET", "GOTRUE_JWT_SECRET", "PGRST_JWT_SECRET"):
        value = (auth_env or {}).get(name)
        if value:
            peers.append((name, value))
    ctx = _EnvContext(
        env=env,
        raw=None,
        version=parse_version(image),
        source=source,
        where=f"the realtime service's environment (compose file; seen in {source})",
        secret_peers=tuple(peers),
        db_names=None,
    )
    return _all_rules(ctx)


def _all_rules(ctx: _EnvContext) -> list[CheckResult]:
    return [
        _rule_jwt_secret(ctx),
        _rule_metrics(ctx),
        _rule_db_enc_key(ctx),
        _rule_secret_key_base(ctx),
        _rule_search_path(ctx),
        _rule_seed(ctx),
        _rule_db_connection(ctx),
    ]


def _rule_jwt_secret(ctx: _EnvContext) -> CheckResult:
    cid = "compose.realtime.jwt_secret"
    secret = ctx.env.get("API_JWT_SECRET", "")
    if not secret:
        return _r(cid, Status.FAIL, f"API_JWT_SECRET is not set in {ctx.source}.",
                  detail="Realtime seeds the tenant's jwt_secret from API_JWT_SECRET and verifies every client "
                  "token against it; unset, the seed falls back to a built-in public default.",
                  remedy=f"Set API_JWT_SECRET: ${{JWT_SECRET}} in {ctx.where}, and JWT_SECRET (32+ characters) "
                  "in the stack's .env: compose interpolates an unset variable to an empty string, so an existing "
                  "API_JWT_SECRET: ${JWT_SECRET} line is empty when .env lacks JWT_SECRET.")
    lines = [f"API_JWT_SECRET ({ctx.source}): {_desc(secret)}"]
    mismatched: list[str] = []
    skipped: list[str] = []
    for label, value in ctx.secret_peers:
        if value.lstrip().startswith("{"):
            skipped.append(label)
            lines.append(f"{label}: a JWK/JWKS, not a shared secret (not compared)")
            continue
        same = value == secret
        lines.append(f"{label}: {_desc(value)} -> {'same' if same else 'DIFFERENT'}")
        if not same:
            mismatched.append(label)
    evidence = {"api_jwt_secret_length": len(secret), "compared": [p[0] for p in ctx.secret_peers]}
    if mismatched:
        return _r(cid, Status.FAIL,
                  f"API_JWT_SECRET differs from {', '.join(mismatched)}: tokens issued by auth fail Realtime's "
                  "signature check (\"Failed to validate JWT signature\").",
                  detail="\n".join(lines),
                  remedy=f"Set API_JWT_SECRET: ${{JWT_SECRET}} in {ctx.where} so Realtime, auth "
                  "(GOTRUE_JWT_SECRET) and rest (PGRST_JWT_SECRET) share the one JWT_SECRET from .env; "
                  "then restart realtime so SEED_SELF_HOST re-seeds the tenant's secret.",
                  evidence=evidence)
    if len(secret) < 32:
        return _r(cid, Status.FAIL, f"API_JWT_SECRET is only {len(secret)} characters; at least 32 are required.",
                  detail="\n".join(lines),
                  remedy="Generate a new JWT_SECRET of 32+ characters (openssl rand -base64 48) in .env, "
                  "re-sign ANON_KEY and SERVICE_ROLE_KEY with it, and restart the stack.",
                  evidence=evidence)
    note = "" if ctx.secret_peers else " (no auth/rest secret to compare with)"
    return _r(cid, Status.PASS, f"API_JWT_SECRET is set ({len(secret)} characters) and matches "
              f"{', '.join(p[0] for p in ctx.secret_peers if p[0] not in skipped) or 'nothing'}{note}.",
              detail="\n".join(lines), evidence=evidence)


def _rule_metrics(ctx: _EnvContext) -> CheckResult:
    cid = "compose.realtime.metrics_jwt_secret"
    value = ctx.env.get("METRICS_JWT_SECRET", "")
    needed = ctx.version.at_least(METRICS_SECRET_SINCE)
    detail = f"image: {ctx.version.describe()}; METRICS_JWT_SECRET is required from v2.78.5 (boot crash without it)."
    if value:
        return _r(cid, Status.PASS, f"METRICS_JWT_SECRET is set ({len(value)} characters).", detail=detail)
    if needed:
        return _r(cid, Status.FAIL,
                  f"METRICS_JWT_SECRET is not set and {ctx.version.describe()} needs it: Realtime crashes at boot.",
                  detail=detail, remedy=f"Add METRICS_JWT_SECRET: ${{JWT_SECRET}} to {ctx.where}.",
                  evidence={"image": ctx.version.image})
    return _r(cid, Status.PASS, f"METRICS_JWT_SECRET is not set, which {ctx.version.describe()} allows "
              "(needed from v2.78.5; add it before upgrading).", detail=detail)


def _rule_db_enc_key(ctx: _EnvContext) -> CheckResult:
    cid = "compose.realtime.db_enc_key"
    value = ctx.env.get("DB_ENC_KEY", "")
    if not value:
        return _r(cid, Status.FAIL, f"DB_ENC_KEY is not set in {ctx.source}.",
                  detail="Realtime encrypts the tenant's jwt_secret and DB credentials with AES-128 keyed by "
                  "DB_ENC_KEY (exactly 16 bytes).",
                  remedy=f"Set DB_ENC_KEY in {ctx.where} to a random 16-character value "
                  "(e.g. openssl rand -hex 8), before the first start.")
    size = len(value.encode())
    if size != 16:
        return _r(cid, Status.FAIL,
                  f"DB_ENC_KEY is {size} bytes; AES-128 needs exactly 16, so seeding and tenant connections fail.",
                  detail=f"DB_ENC_KEY ({ctx.source}): {size} bytes, {_fp(value)}.",
                  remedy=f"Set DB_ENC_KEY in {ctx.where} to exactly 16 characters (e.g. openssl rand -hex 8); "
                  "rows encrypted with the old key must be re-seeded (restart realtime with SEED_SELF_HOST=true).",
                  evidence={"bytes": size})
    if value in (PUBLIC_DB_ENC_KEY, "your16charkey123"):
        return _r(cid, Status.WARN, "DB_ENC_KEY is the public example value; anyone can decrypt the stored "
                  "tenant secrets.",
                  detail=f"DB_ENC_KEY ({ctx.source}) is a value published in the Supabase docker files.",
                  remedy=f"Set DB_ENC_KEY in {ctx.where} (REALTIME_DB_ENC_KEY in .env for the newest official "
                  "stack) to your own 16 random characters, then restart realtime so the seed re-encrypts.")
    return _r(cid, Status.PASS, "DB_ENC_KEY is 16 bytes and not the public default.")


def _rule_secret_key_base(ctx: _EnvContext) -> CheckResult:
    cid = "compose.realtime.secret_key_base"
    value = ctx.env.get("SECRET_KEY_BASE", "")
    if not value:
        return _r(cid, Status.FAIL, "SECRET_KEY_BASE is not set: Realtime crashes at boot.",
                  remedy=f"Set SECRET_KEY_BASE: ${{SECRET_KEY_BASE}} in {ctx.where} and put 64+ random characters "
                  "in .env (openssl rand -base64 48).")
    if len(value) < 64:
        return _r(cid, Status.FAIL, f"SECRET_KEY_BASE is {len(value)} characters; Phoenix needs at least 64.",
                  remedy="Set SECRET_KEY_BASE in .env to 64+ random characters (openssl rand -base64 48).",
                  evidence={"length": len(value)})
    if value in DEMO_VALUES["SECRET_KEY_BASE"]:
        return _r(cid, Status.WARN, "SECRET_KEY_BASE is the public example value.",
                  remedy="Set SECRET_KEY_BASE in .env to 64+ random characters (openssl rand -base64 48).")
    return _r(cid, Status.PASS, f"SECRET_KEY_BASE is set ({len(value)} characters).")


_SEARCH_PATH = re.compile(r"set\s+search_path\s*(?:to|=)\s*['\"]?_realtime\b", re.I)


def _rule_search_path(ctx: _EnvContext) -> CheckResult:
    cid = "compose.realtime.search_path"
    value = ctx.env.get("DB_AFTER_CONNECT_QUERY", "")
    if _SEARCH_PATH.search(value):
        return _r(cid, Status.PASS, "DB_AFTER_CONNECT_QUERY sets search_path to _realtime.",
                  evidence={"DB_AFTER_CONNECT_QUERY": value})
    return _r(cid, Status.FAIL,
              "DB_AFTER_CONNECT_QUERY does not set search_path to _realtime: Realtime's migrations and tenant "
              "lookups hit 'relation \"tenants\" does not exist'.",
              detail=f"DB_AFTER_CONNECT_QUERY ({ctx.source}) = {value!r}.",
              remedy=f"Set DB_AFTER_CONNECT_QUERY: 'SET search_path TO _realtime' in {ctx.where}.",
              evidence={"DB_AFTER_CONNECT_QUERY": value})


def _rule_seed(ctx: _EnvContext) -> CheckResult:
    cid = "compose.realtime.seed_self_host"
    present = "SEED_SELF_HOST" in ctx.env
    value = ctx.env.get("SEED_SELF_HOST", "")
    raw = ctx.raw.get("SEED_SELF_HOST") if ctx.raw is not None else None
    seeds_in_command = "Release.seeds" in ctx.command
    if value == "true":
        if isinstance(raw, bool):
            return _r(cid, Status.WARN,
                      "SEED_SELF_HOST is an unquoted YAML boolean: docker compose passes 'true', but Podman and "
                      "other tools pass 'True', and then the tenant is not seeded (older images crash).",
                      detail=f"{ctx.where}.SEED_SELF_HOST: true (YAML boolean).",
                      remedy=f'Quote it: SEED_SELF_HOST: "true" in {ctx.where}.')
        return _r(cid, Status.PASS, "SEED_SELF_HOST is \"true\": Realtime seeds the self-host tenant on every start.")
    if seeds_in_command:
        return _r(cid, Status.PASS, "The Realtime command runs Realtime.Release.seeds explicitly"
                  + (f" (SEED_SELF_HOST={value!r} is not needed)." if present else "."),
                  detail=f"command: {ctx.command[:200]}")
    shown = repr(value) if present else "not set"
    return _r(cid, Status.FAIL,
              f"SEED_SELF_HOST is {shown}: Realtime seeds the tenant only when it is exactly 'true', so no "
              "tenant row is created or refreshed and clients get 'Tenant not found'.",
              detail=f"{ctx.where}.SEED_SELF_HOST = {shown}; run.sh tests [ \"$SEED_SELF_HOST\" = true ].",
              remedy=f'Set SEED_SELF_HOST: "true" (quoted) in {ctx.where}.',
              evidence={"SEED_SELF_HOST": value if present else None})


_DB_KEYS = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME")


def _rule_db_connection(ctx: _EnvContext) -> CheckResult:
    cid = "compose.realtime.db_connection"
    missing = [k for k in _DB_KEYS if not ctx.env.get(k)]
    shown = {k: ("set" if k == "DB_PASSWORD" and ctx.env.get(k) else ctx.env.get(k, "")) for k in _DB_KEYS}
    detail = ", ".join(f"{k}={v or '(empty)'}" for k, v in shown.items())
    if missing:
        return _r(cid, Status.FAIL, f"Realtime's database connection is incomplete: {', '.join(missing)} empty.",
                  detail=f"{ctx.source}: {detail}. An empty value usually means the .env lacks the variable it "
                  "references (POSTGRES_HOST, POSTGRES_PORT, POSTGRES_PASSWORD, POSTGRES_DB).",
                  remedy=f"Set {', '.join(missing)} in {ctx.where} (official values: DB_HOST: ${{POSTGRES_HOST}}, "
                  "DB_PORT: ${POSTGRES_PORT}, DB_USER: supabase_admin, DB_PASSWORD: ${POSTGRES_PASSWORD}, "
                  "DB_NAME: ${POSTGRES_DB}) and define those in .env.",
                  evidence={"missing": missing})
    port = ctx.env["DB_PORT"]
    if not port.isdigit() or not 0 < int(port) < 65536:
        return _r(cid, Status.FAIL, f"DB_PORT={port!r} is not a port number.",
                  remedy=f"Set DB_PORT to the database port (5432) in {ctx.where}.")
    host = ctx.env["DB_HOST"]
    if ctx.db_names is not None and host not in ctx.db_names and not _looks_external(host):
        return _r(cid, Status.FAIL,
                  f"DB_HOST={host!r} names no service of the stack and does not look like an external host: "
                  "Realtime fails at boot with 'Failed to detect IP version for DB_HOST: nxdomain'.",
                  detail=f"{detail}. Names that resolve to the database service: {', '.join(ctx.db_names) or 'none'}.",
                  remedy=f"Set DB_HOST to {ctx.db_names[0] if ctx.db_names else 'db'} (POSTGRES_HOST in .env), "
                  "or to the external database's host name.",
                  evidence={"DB_HOST": host, "db_names": list(ctx.db_names)})
    where = "the db service" if ctx.db_names is not None and host in ctx.db_names else "an external/unchecked host"
    return _r(cid, Status.PASS, f"DB_HOST={host} ({where}), DB_PORT={port}, DB_USER={ctx.env['DB_USER']}, "
              f"DB_NAME={ctx.env['DB_NAME']}, DB_PASSWORD set.", evidence={"DB_HOST": host, "DB_PORT": port})


# ====================================================================== stack checks


def _stack(target: Target) -> Stack:
    assert target.stack is not None  # needs=("stack",)
    return target.stack


def _realtime_or_skip(target: Target, cid: str) -> Service | CheckResult:
    rt = _stack(target).realtime_service()
    if rt is None:
        return _r(cid, Status.SKIP, "Skipped: the stack has no Realtime service (see compose.realtime.present).")
    return rt


def _db_names(stack: Stack) -> tuple[str, ...]:
    names: list[str] = []
    for svc in stack.services.values():
        repo = svc.image_repo()
        is_db = repo.endswith(("supabase/postgres", "/postgres")) or repo == "postgres"
        is_pooler = "supavisor" in repo or "pgbouncer" in repo
        if is_db or is_pooler or svc.name in ("db", "supabase-db", "supavisor", "pgbouncer"):
            names.extend(svc.dns_names)
    return tuple(dict.fromkeys(names))


def _stack_context(stack: Stack, rt: Service) -> _EnvContext:
    peers: list[tuple[str, str]] = []
    for svc in stack.services.values():
        for name in ("GOTRUE_JWT_SECRET", "PGRST_JWT_SECRET"):
            value = svc.environment.get(name)
            if value:
                peers.append((f"services.{svc.name}.environment.{name}", value))
    if stack.env.get("JWT_SECRET"):
        peers.append((".env JWT_SECRET", stack.env["JWT_SECRET"]))
    cmd = rt.command if isinstance(rt.command, str) else " ".join(rt.command or [])
    return _EnvContext(
        env=rt.environment,
        raw=rt.environment_raw,
        version=parse_version(rt.image),
        source=f"services.{rt.name}.environment",
        where=f"services.{rt.name}.environment",
        secret_peers=tuple(peers),
        db_names=_db_names(stack),
        command=cmd,
    )


def _env_rule(target: Target, cid: str, rule: Any) -> CheckResult:
    got = _realtime_or_skip(target, cid)
    if isinstance(got, CheckResult):
        return got
    result: CheckResult = rule(_stack_context(_stack(target), got))
    return result


@register("compose.realtime.present", "A Realtime service exists", needs=("stack",))
def check_present(target: Target, cid: str) -> CheckResult:
    """A service with image ``supabase/realtime`` (or named ``realtime``) is defined and active."""
    stack = _stack(target)
    rt = stack.realtime_service()
    files = ", ".join(str(f) for f in stack.compose_files)
    if rt is None:
        inactive = [s.name for s in stack.inactive_services.values() if "realtime" in s.image or "realtime" in s.name]
        extra = f" ({', '.join(inactive)} is disabled by profiles)" if inactive else ""
        return _r(cid, Status.FAIL,
                  f"No Realtime service in {files}{extra}.",
                  detail=f"Services: {', '.join(sorted(stack.services)) or 'none'}. rtbook looks for image "
                  "supabase/realtime or a service named realtime.",
                  remedy="Add the realtime service from supabase/supabase docker/docker-compose.yml "
                  "(image supabase/realtime, container_name realtime-dev.supabase-realtime).")
    version = parse_version(rt.image)
    return _r(cid, Status.PASS,
              f"Realtime is service {rt.name!r}, image {version.describe()}.",
              evidence={"service": rt.name, "image": rt.image, "container_name": rt.container_name,
                        "env_file": str(stack.env_file) if stack.env_file else None})


@register("compose.realtime.seed_self_host", "SEED_SELF_HOST is the string \"true\"", needs=("stack",))
def check_seed(target: Target, cid: str) -> CheckResult:
    """The seed creates the tenant row only when ``SEED_SELF_HOST`` is exactly ``true``."""
    return _env_rule(target, cid, _rule_seed)


@register("compose.realtime.jwt_secret", "Realtime's API_JWT_SECRET matches auth and rest", needs=("stack",))
def check_jwt_secret(target: Target, cid: str) -> CheckResult:
    """``API_JWT_SECRET`` equals the JWT secret of auth, rest and ``.env``, and has 32+ characters."""
    return _env_rule(target, cid, _rule_jwt_secret)


@register("compose.realtime.metrics_jwt_secret", "METRICS_JWT_SECRET set where the image needs it", needs=("stack",))
def check_metrics(target: Target, cid: str) -> CheckResult:
    """v2.78.5 and later crash at boot without ``METRICS_JWT_SECRET``."""
    return _env_rule(target, cid, _rule_metrics)


@register("compose.realtime.db_enc_key", "DB_ENC_KEY is 16 bytes and not the public default", needs=("stack",))
def check_db_enc_key(target: Target, cid: str) -> CheckResult:
    """AES-128 needs a 16-byte key; ``supabaserealtime`` is public."""
    return _env_rule(target, cid, _rule_db_enc_key)


@register("compose.realtime.secret_key_base", "SECRET_KEY_BASE is set (64+ characters)", needs=("stack",))
def check_secret_key_base(target: Target, cid: str) -> CheckResult:
    """Realtime crashes at boot without ``SECRET_KEY_BASE``."""
    return _env_rule(target, cid, _rule_secret_key_base)


@register("compose.realtime.search_path", "DB_AFTER_CONNECT_QUERY sets search_path to _realtime", needs=("stack",))
def check_search_path(target: Target, cid: str) -> CheckResult:
    """Realtime's own tables live in ``_realtime``."""
    return _env_rule(target, cid, _rule_search_path)


@register("compose.realtime.db_connection", "Realtime's DB_* variables reach the database", needs=("stack",))
def check_db_connection(target: Target, cid: str) -> CheckResult:
    """``DB_HOST``/``DB_PORT``/``DB_USER``/``DB_PASSWORD``/``DB_NAME`` set and ``DB_HOST`` names the db."""
    return _env_rule(target, cid, _rule_db_connection)


# ---------------------------------------------------------------- tenant consistency

_HEALTH_URL = re.compile(r"/api/tenants/([^/\s\"']+)/health")


def _health_tenant(rt: Service) -> str | None:
    hc = rt.healthcheck
    if hc is None:
        return None
    m = _HEALTH_URL.search(hc.command)
    return m.group(1) if m else None


def _resolvers(stack: Stack, host: str) -> list[str]:
    """What makes ``host`` resolvable on the compose network (service name, container_name, alias)."""
    out: list[str] = []
    for svc in stack.services.values():
        if host == svc.name:
            out.append(f"service name {svc.name!r}")
        if host == svc.container_name:
            out.append(f"container_name of service {svc.name!r}")
        for net, aliases in svc.networks.items():
            if host in aliases:
                out.append(f"network alias on {net} of service {svc.name!r}")
    return out


def _envoy_file(stack: Stack, kind: str) -> str:
    for key, path in stack.envoy_files().items():
        if kind in f"{key} {path.name}".lower():
            return str(path)
    return f"the Envoy {kind} file"


def _host_owner(stack: Stack, host: str) -> Service | None:
    for svc in stack.services.values():
        if host in svc.dns_names:
            return svc
    return None


def _first_network(service: Service) -> str:
    """The service's first network (compose's ``default`` when it names none), for alias remedies."""
    return next(iter(service.networks), "default")


@register(
    "compose.realtime.tenant_consistency",
    "Gateway Host, container name, healthcheck and seeded tenant agree",
    needs=("stack",),
    using=_realtime_or_skip,
)
def check_tenant_consistency(target: Target, cid: str, got: Service) -> CheckResult:
    """The tenant from the gateway's upstream Host equals the seeded tenant, and that host resolves to Realtime."""
    rt = got
    stack = _stack(target)
    named = rt.environment.get("SELF_HOST_TENANT_NAME", "")
    version = parse_version(rt.image)
    if named and not version.at_least(TENANT_NAME_SINCE):
        # Images before v2.33.68 ignore the variable and always seed realtime-dev.
        seeded = DEFAULT_TENANT
        seeded_src = (f"SELF_HOST_TENANT_NAME={named} is ignored by {version.describe()} "
                      "(supported from v2.33.68)")
    elif named:
        seeded, seeded_src = named, f"services.{rt.name}.environment.SELF_HOST_TENANT_NAME"
    else:
        seeded, seeded_src = DEFAULT_TENANT, "SELF_HOST_TENANT_NAME unset (default)"
    lines = [f"seeded tenant: {seeded} ({seeded_src})",
             f"Realtime service {rt.name!r} is reachable on its networks as: {', '.join(rt.dns_names)}"]
    problems: list[str] = []
    remedies: list[str] = []
    warnings: list[str] = []
    evidence: dict[str, Any] = {"seeded_tenant": seeded, "realtime_service": rt.name,
                                "container_name": rt.container_name}
    kind = stack.gateway_kind()
    gw = stack.gateway_service()
    host_tenants: list[tuple[str, str]] = []  # (host, tenant) the gateway sends
    resolve_hosts: list[str] = []
    if kind is None or gw is None:
        lines.append("gateway: none in the stack (clients must send a Host whose first label is the tenant)")
    else:
        up = realtime_upstream(stack)
        if up.error:  # the gateway's own checks (kong.parse/envoy.parse) report the details
            lines.append(f"{kind} config: unreadable ({up.error.split(':', 1)[0]}); see the {kind}.* results")
            warnings.append(f"the {kind} config could not be read, so its upstream host was not compared")
        elif kind == "kong":
            for h, origin in zip(up.host_headers, up.host_origins or ("",) * len(up.host_headers), strict=False):
                host_tenants.append((h, tenant_of(h)))
                if origin.startswith("request-transformer"):
                    lines.append(f"Kong Host set by a plugin ({origin}): {h} -> tenant {tenant_of(h)} (Realtime "
                                 "sees this Host, not the upstream host)")
                else:
                    lines.append(f"Kong upstream host (kong.yml realtime service url): {h} -> tenant "
                                 f"{tenant_of(h)} (Kong sends the upstream host as Host)")
            if up.keeps_client_host:
                lines.append("a Kong Realtime route forwards the client's Host (preserve_host): the tenant is the "
                             "first label of the public host name there")
                warnings.append("a Kong Realtime route keeps the client's Host, so the tenant depends on the public "
                                "host name clients use (see kong.realtime_preserve_host)")
            resolve_hosts = list(up.connect_hosts)
        else:
            for h in up.host_headers:
                host_tenants.append((h, tenant_of(h)))
                lines.append(f"Envoy host rewrite (host_rewrite_literal): {h} -> tenant {tenant_of(h)}")
            for h in up.connect_hosts:
                lines.append(f"Envoy realtime cluster address: {h} (must resolve to the Realtime container)")
            if not up.host_headers and up.connect_hosts:
                lines.append("Envoy routes keep the client's Host: the tenant is the first label of the "
                             "public host name")
                warnings.append("the Envoy Realtime routes do not rewrite Host, so the tenant depends on the "
                                "public host name clients use")
            resolve_hosts = list(up.connect_hosts)
        if not host_tenants and not resolve_hosts and not warnings:
            warnings.append(f"the {kind} config has no route to Realtime (see {kind}.realtime_ws)")
        routed = {} if up.error else up.routed_tenants
        for extra, publics in routed.items():
            # A multi-tenant stack: these routes match only their public hosts; their rows are the
            # tenant.* checks' business (--all-tenants), not the seed's.
            lines.append(f"{kind} routes for Host {', '.join(publics)} reach tenant {extra} (an added tenant)")
        evidence["routed_tenants"] = {t: list(p) for t, p in routed.items()}
        per_host: dict[str, set[str]] = {}
        for public, sent in () if up.error else up.routed:
            per_host.setdefault(public.rsplit(":", 1)[0], set()).add(tenant_of(sent.rsplit(":", 1)[0]))
        for public, tenants in per_host.items():
            if len(tenants) > 1:
                problems.append(f"the {kind} routes for Host {public} reach different tenants "
                                f"({', '.join(sorted(tenants))})")
                remedies.append(f"Point every Realtime route for Host {public} at one tenant's host (rtbook tenant "
                                f"remove <tenant>, then tenant add <tenant> --public-host {public}, writes a "
                                "consistent set)")
    evidence["gateway"] = kind
    evidence["gateway_hosts"] = [h for h, _ in host_tenants]
    for host, tenant in host_tenants:
        if tenant != seeded:
            problems.append(f"the gateway sends Host {host} (tenant {tenant!r}) but the seeded tenant is {seeded!r}")
            if kind == "kong":
                # The rest of the host after its first label (the official ".supabase-realtime" when the host
                # has none), so the remedy names the real host instead of a placeholder.
                suffix = host.split(":", 1)[0].partition(".")[2] or "supabase-realtime"
                remedies.append(
                    f"Either set SELF_HOST_TENANT_NAME: {tenant} in services.{rt.name}.environment, or point the "
                    f"kong.yml realtime services at http://{seeded}.{suffix}:4000 and give the realtime service "
                    f"container_name (or a network alias) {seeded}.{suffix}")
            else:
                remedies.append(f"Set host_rewrite_literal: {seeded}.supabase-realtime on the Realtime routes in "
                                f"{_envoy_file(stack, 'lds')}, or SELF_HOST_TENANT_NAME: {tenant} in "
                                f"services.{rt.name}.environment")
    for host in resolve_hosts:
        host_only = host.split(":", 1)[0]
        owners = _resolvers(stack, host_only)
        owner = _host_owner(stack, host_only)
        if owners:
            lines.append(f"{host_only} resolves via {'; '.join(owners)}")
        if owner is None:
            hostname_of = [s.name for s in stack.services.values() if s.hostname == host_only]
            if hostname_of:
                lines.append(f"{host_only} is only the hostname: of service {hostname_of[0]!r}; Docker DNS does not "
                             "resolve hostname: values for other containers")
            problems.append(f"the gateway's Realtime upstream {host_only} is not the name, container_name or network "
                            "alias of any service, so it does not resolve on the compose network")
            fix = (f"Set container_name: {host_only} on services.{rt.name} (or add it under "
                   f"services.{rt.name}.networks.{_first_network(rt)}.aliases)")
            if kind == "envoy":
                fix += f", or set the Realtime cluster address in {_envoy_file(stack, 'cds')} to {rt.name}"
            remedies.append(fix)
        elif owner.name != rt.name:
            problems.append(f"the gateway's Realtime upstream {host_only} resolves to service {owner.name!r}, "
                            f"not to Realtime ({rt.name!r})")
            remedies.append(f"Point the gateway's Realtime upstream at {rt.container_name or rt.name}")
        elif rt.deploy and not any(host_only in a for a in rt.networks.values()) and host_only != rt.name:
            warnings.append(f"{host_only} resolves only through container_name, which 'docker stack deploy' "
                            "ignores: in swarm mode the upstream does not resolve")
            remedies.append(f"For swarm, add {host_only} under "
                            f"services.{rt.name}.networks.{_first_network(rt)}.aliases")
    health = _health_tenant(rt)
    if health is not None:
        lines.append(f"healthcheck URL: /api/tenants/{health}/health -> tenant {health}")
        if health != seeded:
            problems.append(f"the healthcheck asks for tenant {health!r} but the seeded tenant is {seeded!r} "
                            "(404: the container stays unhealthy)")
            remedies.append(f"Change the healthcheck URL in services.{rt.name}.healthcheck.test to "
                            f"/api/tenants/{seeded}/health")
    else:
        lines.append("healthcheck: no /api/tenants/<tenant>/health URL")
    evidence["healthcheck_tenant"] = health
    asked = target.tenant
    if asked and asked != seeded and asked not in evidence.get("routed_tenants", {}):
        # The caller says which tenant the stack should serve (e.g. after a rename): the stack's files must agree.
        problems.append(f"the stack serves tenant {seeded!r}, not the requested {asked!r}")
        remedies.append(f"Finish the rename: rtbook tenant rename {asked} --stack {stack.root} --out DIR, copy the "
                        "files it writes into the stack and restart realtime and the gateway (or check with "
                        f"--tenant {seeded})")
    detail = "\n".join(lines)
    if problems:
        return _r(cid, Status.FAIL, "Tenant mismatch: " + "; ".join(problems) + ".",
                  detail=detail + "\nRealtime takes the tenant from the first label of the request's Host header.",
                  remedy="; ".join(dict.fromkeys(remedies)) + ".", evidence=evidence)
    if warnings:
        return _r(cid, Status.WARN, "Tenant sources agree on " + repr(seeded) + ", but " + "; ".join(warnings) + ".",
                  detail=detail, remedy="; ".join(dict.fromkeys(remedies)) or
                  "Check the gateway configuration (see the gateway checks).", evidence=evidence)
    return _r(cid, Status.PASS, f"Every tenant source agrees on {seeded!r}.", detail=detail, evidence=evidence)


# ---------------------------------------------------------------- healthcheck / network


@register("compose.realtime.healthcheck", "Realtime healthcheck targets the tenant health URL", needs=("stack",),
          using=_realtime_or_skip)
def check_healthcheck(target: Target, cid: str, got: Service) -> CheckResult:
    """A ``CMD-SHELL`` healthcheck on ``/api/tenants/<tenant>/health`` with a Bearer token."""
    rt = got
    stack = _stack(target)
    where = f"services.{rt.name}.healthcheck"
    official = ('test: ["CMD-SHELL", "curl -sSfL --head -o /dev/null -H \\"Authorization: Bearer ${ANON_KEY}\\" '
                'http://localhost:4000/api/tenants/realtime-dev/health"]')
    waiting = [s.name for s in stack.services.values()
               if (s.depends_on.get(rt.name) or {}).get("condition") == "service_healthy"]
    hc = rt.healthcheck
    if hc is None or hc.disabled:
        status = Status.FAIL if waiting else Status.WARN
        but = f" but {', '.join(waiting)} wait for it to be healthy" if waiting else ""
        return _r(cid, status, f"Realtime has no healthcheck{but}.",
                  remedy=f"Add to {where}: {official}")
    tenant = _health_tenant(rt)
    problems: list[str] = []
    if tenant is None:
        problems.append("the healthcheck does not call /api/tenants/<tenant>/health")
    m = re.search(r"Authorization:\s*Bearer\s*(\S*)", hc.command)
    if m is None:
        problems.append("it sends no 'Authorization: Bearer <token>' header (the endpoint answers 403)")
    elif not m.group(1).strip("\"'\\"):
        problems.append("its Bearer token is empty (ANON_KEY unset in .env?), so the endpoint answers 403")
    else:
        # The tenant health endpoint verifies the token with API_JWT_SECRET (not the tenant row).
        bearer = m.group(1).strip("\"'\\")
        secret = rt.environment.get("API_JWT_SECRET", "")
        claims, sig = verify_jwt(bearer, secret or None)
        if claims is not None and sig == "bad signature":
            problems.append("its Bearer token is not signed with Realtime's API_JWT_SECRET, so the endpoint "
                            "answers 403 (re-sign ANON_KEY with JWT_SECRET or make API_JWT_SECRET: ${JWT_SECRET})")
        exp = claims.get("exp") if claims else None
        if isinstance(exp, int | float) and exp <= _common.now():
            problems.append("its Bearer token has expired, so the endpoint answers 403 (generate a new ANON_KEY)")
    evidence = {"form": hc.form, "tenant": tenant}
    if problems:
        return _r(cid, Status.FAIL, "Realtime's healthcheck cannot pass: " + "; ".join(problems) + ".",
                  remedy=f"Use in {where}: {official} (with your tenant id)", evidence=evidence)
    if hc.form == "CMD":
        return _r(cid, Status.WARN,
                  "The healthcheck uses the exec form [\"CMD\", \"curl\", ...]; Podman mangles it into a broken "
                  "shell string and reports 403 (supabase/supabase#40326).",
                  remedy=f"Use the CMD-SHELL form in {where}: {official}", evidence=evidence)
    return _r(cid, Status.PASS, f"The healthcheck calls /api/tenants/{tenant}/health with a Bearer token "
              f"({hc.form} form).", evidence=evidence)


@register("compose.realtime.network", "Realtime and the gateway share a network", needs=("stack",),
          using=_realtime_or_skip)
def check_network(target: Target, cid: str, got: Service) -> CheckResult:
    """The gateway can only reach Realtime over a common network."""
    rt = got
    stack = _stack(target)
    gw = stack.gateway_service()
    if gw is None:
        return _r(cid, Status.SKIP, "Skipped: the stack has no Kong or Envoy gateway service.")
    if rt.network_mode or gw.network_mode:
        modes = {s.name: s.network_mode for s in (rt, gw) if s.network_mode}
        if all(m == "host" for m in modes.values()) and len(modes) == 2:
            return _r(cid, Status.PASS, "Realtime and the gateway both use the host network.")
        return _r(cid, Status.WARN, f"network_mode is set ({modes}); rtbook cannot tell whether the gateway "
                  "reaches Realtime.", remedy="Put both services on the same compose network.",
                  evidence={"network_mode": modes})
    shared = sorted(set(rt.networks) & set(gw.networks))
    evidence = {"realtime": sorted(rt.networks), "gateway": sorted(gw.networks), "shared": shared}
    if shared:
        return _r(cid, Status.PASS, f"Realtime ({rt.name}) and the gateway ({gw.name}) share network(s) "
                  f"{', '.join(shared)}.", evidence=evidence)
    net = sorted(gw.networks)[0] if gw.networks else "default"
    return _r(cid, Status.FAIL,
              f"Realtime ({rt.name}: {', '.join(sorted(rt.networks))}) and the gateway ({gw.name}: "
              f"{', '.join(sorted(gw.networks))}) share no network, so the gateway cannot reach Realtime.",
              remedy=f"Add network {net} to services.{rt.name}.networks.", evidence=evidence)


# ---------------------------------------------------------------- compose.db.*


# What Realtime's postgres_changes and database broadcasts need from the server (realtime-facts 4.3).
_WAL_SETTINGS = ("wal_level", "max_replication_slots", "max_wal_senders")


def _db_service(stack: Stack) -> Service | None:
    """The PostgreSQL service of the stack (a pooler is not it), or None when the database is external."""
    for svc in stack.services.values():
        repo = svc.image_repo()
        if repo.endswith(("supabase/postgres", "/postgres")) or repo == "postgres":
            return svc
    for name in ("db", "supabase-db"):
        if name in stack.services:
            return stack.services[name]
    return None


def _command_words(command: list[str] | str | None) -> list[str]:
    """The words of a compose ``command``, with ``sh -c "..."`` strings split again."""
    items = [command] if isinstance(command, str) else list(command or [])
    words: list[str] = []
    for item in items:
        if any(c.isspace() for c in item):
            try:
                words.extend(shlex.split(item))
            except ValueError:  # unbalanced quotes: split on blanks, as a best effort
                words.extend(item.split())
        else:
            words.append(item)
    return words


def _setting_at(words: list[str], i: int) -> tuple[str, str, bool] | None:
    """The ``(name, value, uses_next_word)`` that ``words[i]`` sets, if it is ``-c x=y``, ``-cx=y`` or ``--x=y``."""
    word = words[i]
    if word == "-c" and i + 1 < len(words):
        option, uses_next = words[i + 1], True
    elif (word.startswith("-c") and len(word) > 2) or (word.startswith("--") and "=" in word):
        option, uses_next = word[2:], False
    else:
        return None
    name, sep, value = option.partition("=")
    # PostgreSQL folds option names: case-insensitive, and "-" stands for "_".
    name = name.strip().lower().replace("-", "_")
    if not sep or not re.fullmatch(r"[a-z_][a-z0-9_.]*", name):
        return None
    return name, value.strip().strip("'\""), uses_next


def postgres_settings(command: list[str] | str | None) -> dict[str, str]:
    """The server settings a ``postgres`` command line sets with ``-c name=value`` or ``--name=value``.

    Args:
        command: the service's ``command`` in list or string form.

    Returns:
        Setting name (folded as PostgreSQL folds it) -> value as written; the last one wins.
    """
    words = _command_words(command)
    out: dict[str, str] = {}
    for i in range(len(words)):
        found = _setting_at(words, i)
        if found is not None:
            out[found[0]] = found[1]
    return out


def _set_in_place(words: list[str], fixes: Mapping[str, str]) -> tuple[list[str], set[str]]:
    """``words`` with each setting named in ``fixes`` given its fixed value where it stands, and the names seen."""
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(words):
        found = _setting_at(words, i)
        if found is not None and found[0] in fixes:
            seen.add(found[0])
            out.extend(["-c", f"{found[0]}={fixes[found[0]]}"])
            i += 2 if found[2] else 1
            continue
        out.append(words[i])
        i += 1
    return out, seen


def _command_with(command: list[str] | str | None, fixes: Mapping[str, str]) -> list[str]:
    """``command`` in list form with the settings in ``fixes`` set; a ``sh -c "..."`` string is edited inside."""
    items = _command_words(command) if isinstance(command, str) else list(command or ["postgres"])
    out, seen = _set_in_place(items, fixes)
    for n, item in enumerate(out):
        if any(c.isspace() for c in item):
            inner, inner_seen = _set_in_place(_command_words(item), fixes)
            out[n] = shlex.join(inner)
            seen |= inner_seen
    out.extend(w for name, value in fixes.items() if name not in seen for w in ("-c", f"{name}={value}"))
    return out


@register("compose.db.wal_level", "The db service's command keeps wal_level=logical and replication slots",
          needs=("stack",))
def check_db_wal_level(target: Target, cid: str) -> CheckResult:
    """``-c wal_level=...``, ``max_replication_slots`` and ``max_wal_senders`` on the db command line."""
    stack = _stack(target)
    db = _db_service(stack)
    if db is None:
        return _r(cid, Status.SKIP, "Skipped: the stack has no PostgreSQL service (an external database; "
                  "db.wal_level checks the server itself).")
    settings = postgres_settings(db.command)
    found = {k: settings[k] for k in _WAL_SETTINGS if k in settings}
    repo = db.image_repo()
    supabase_image = repo.endswith("supabase/postgres")
    plain_image = not supabase_image and (repo == "postgres" or repo.endswith("/postgres"))
    where = f"services.{db.name}.command"
    evidence: dict[str, Any] = {"service": db.name, "image": db.image, "command_settings": found}
    fixes: dict[str, str] = {}
    problems: list[str] = []
    wal_level = found.get("wal_level")
    if wal_level is not None and wal_level.lower() != "logical":
        fixes["wal_level"] = "logical"
        problems.append(
            f"{where} sets wal_level={wal_level}: logical decoding needs wal_level=logical, so Realtime cannot "
            "create its replication slot (\"logical decoding requires wal_level >= logical\"); clients still get "
            "\"Subscribed to PostgreSQL\" but no postgres_changes arrive."
        )
    for name, default in (("max_replication_slots", "5"), ("max_wal_senders", "10")):
        value = found.get(name)
        if value is not None and value.strip() == "0":
            fixes[name] = default
            part = ("Realtime's replication slots (up to 2 per tenant: postgres_changes and database broadcasts)"
                    if name == "max_replication_slots" else
                    "the replication connection of database broadcasts (realtime.messages)")
            problems.append(f"{where} sets {name}=0, which leaves no room for {part}.")
    if not problems and wal_level is None and plain_image:
        fixes["wal_level"] = "logical"
        remedy = _wal_remedy(db, fixes)
        evidence["override_yaml"] = remedy
        return _r(cid, Status.WARN,
                  f"Service {db.name} runs the plain {db.image or repo} image without wal_level on its command "
                  "line, so PostgreSQL uses its default wal_level=replica and postgres_changes never arrive.",
                  detail="supabase/postgres sets wal_level=logical in its postgresql.conf; the postgres image "
                  "does not. That image also lacks the wal2json plugin Realtime reads changes with (see "
                  "db.wal2json).",
                  remedy="Set wal_level=logical on the server's command line:\n" + remedy, evidence=evidence)
    if problems:
        remedy = _wal_remedy(db, fixes)
        evidence["override_yaml"] = remedy
        return _r(cid, Status.FAIL,
                  f"Service {db.name}'s command turns off what Realtime replicates with: "
                  + ", ".join(f"{k}={found[k]}" for k in fixes) + ".",
                  detail="\n".join(problems),
                  remedy="Change the command (compose replaces a command as a whole, so give all of it, in "
                  "docker-compose.yml or an override file), then recreate the database container "
                  f"(docker compose up -d --force-recreate {db.name}):\n" + remedy,
                  evidence=evidence)
    if wal_level is not None:
        return _r(cid, Status.PASS, f"Service {db.name}'s command sets wal_level=logical.", evidence=evidence)
    if supabase_image:
        return _r(cid, Status.PASS, f"Service {db.name} ({db.image}) keeps the image's wal_level=logical "
                  "(nothing on its command line changes it).", evidence=evidence)
    return _r(cid, Status.SKIP,
              f"Skipped: service {db.name} ({db.image or 'a locally built image'}) does not set wal_level on its "
              "command line, so its image's configuration decides (db.wal_level checks the live server).",
              evidence=evidence)


def _wal_remedy(db: Service, fixes: Mapping[str, str]) -> str:
    """The compose YAML that gives ``db`` its command with ``fixes`` applied."""
    command = _command_with(db.command, fixes)
    body = yaml.safe_dump({"services": {db.name: {"command": command}}}, sort_keys=False, default_flow_style=False)
    return body.rstrip()
