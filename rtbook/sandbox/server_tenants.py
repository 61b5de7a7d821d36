"""Configuration, tenant lookup and JWT verification for the Realtime-compatible server.

Tenants are read from ``_realtime.tenants`` / ``_realtime.extensions`` in the metadata database
and decrypted with ``DB_ENC_KEY`` exactly as Realtime does; JWTs are verified against the
tenant's secret with Realtime's error reasons (``lib/realtime_web/channels/auth/jwt_verification.ex``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rtbook.crypto import DecryptError, decrypt
from rtbook.exceptions import ConfigError
from rtbook.sandbox.server_version import NEWEST_READ, RealtimeBehaviour, Timers
from rtbook.secrets import Secret

__all__ = [
    "AuthError",
    "ServerConfig",
    "Tenant",
    "TenantStore",
    "verify_jwt",
]

log = logging.getLogger("rtbook.sandbox.server")

DB_PASSWORD_ENV = "RTBOOK_SANDBOX_DB_PASSWORD"
_SECRET_ENVS = {
    "db_enc_key": "RTBOOK_SANDBOX_DB_ENC_KEY",
    "api_jwt_secret": "RTBOOK_SANDBOX_API_JWT_SECRET",
    "metrics_jwt_secret": "RTBOOK_SANDBOX_METRICS_JWT_SECRET",
}


@dataclass
class ServerConfig:
    """The server's settings, read from the JSON file named on its command line.

    Keys: ``db`` (libpq conninfo of the metadata DB holding ``_realtime``, without password),
    ``db_enc_key`` (DB_ENC_KEY, 16 bytes), ``api_jwt_secret`` (API_JWT_SECRET, admin API),
    ``metrics_jwt_secret`` (METRICS_JWT_SECRET), ``host`` (127.0.0.1), ``port`` (0 = free port),
    ``realtime_version`` (the image tag to behave as, default the newest read: see
    :mod:`rtbook.sandbox.server_version`), ``poll_interval_ms`` (null = the extension row's
    poll_interval_ms), ``tenant_cache_ttl_ms`` (1000), ``connect_error_backoff_ms`` /
    ``channel_error_backoff_ms`` (null = ``CONNECT_ERROR_BACKOFF_MS`` / ``CHANNEL_ERROR_BACKOFF_MS`` from the
    environment, else the version's default: 2000 from v2.81.0 / 5000 from v2.83.0, none before),
    ``slot_name_suffix`` ("" gives ``supabase_realtime_replication_slot_`` like the stock image, whose
    Dockerfile sets ``SLOT_NAME_SUFFIX`` empty), ``rate_window_s`` (60: limits compare the average rate over
    this window), ``rate_tick_s`` (null = the version's tick of the channel events counter: 5 s since
    v2.80.12, 1 s before), ``idle_timeout_s`` (60), ``node``, ``region`` (null = ``REGION`` from the environment),
    ``log_level`` (null = ``LOG_LEVEL`` from the environment, else info), ``cluster_channel`` (null = a lone
    node; else the LISTEN/NOTIFY channel its cluster relays broadcast and presence through, see
    :mod:`rtbook.sandbox.server_cluster`). Unknown keys are an error.

    Secrets may be given in the file (written 0600 by the manager) or, when absent there, in the
    environment (``RTBOOK_SANDBOX_DB_ENC_KEY``, ``RTBOOK_SANDBOX_API_JWT_SECRET``,
    ``RTBOOK_SANDBOX_METRICS_JWT_SECRET``); the metadata DB password only via
    ``RTBOOK_SANDBOX_DB_PASSWORD`` (never on argv). The tenant DB credentials come from the
    tenant's ``postgres_cdc_rls`` row, decrypted with ``db_enc_key``.
    """

    db: str
    db_enc_key: Secret
    api_jwt_secret: Secret
    metrics_jwt_secret: Secret
    db_password: Secret | None = None
    host: str = "127.0.0.1"
    port: int = 0
    poll_interval_ms: int | None = None
    tenant_cache_ttl_ms: int = 1000
    realtime_version: str = NEWEST_READ
    connect_error_backoff_ms: int | None = None
    channel_error_backoff_ms: int | None = None
    slot_name_suffix: str = ""
    # Realtime compares limits with the average rate over ~60 s (5 s ticks x 12 buckets).
    rate_window_s: float = 60.0
    # The tenant events counter's tick (None = the version's: 5 s since v2.80.12, 1 s before).
    rate_tick_s: float | None = None
    idle_timeout_s: float = 60.0
    node: str = "realtime@127.0.0.1"
    region: str | None = None
    log_level: str | None = None
    cluster_channel: str | None = None
    # Resolved from realtime_version and the environment by from_mapping (not a file key).
    timers: Timers | None = None

    @property
    def behaviour(self) -> RealtimeBehaviour:
        """The switches of ``realtime_version``."""
        return RealtimeBehaviour.of(self.realtime_version)

    def resolved_timers(self) -> Timers:
        """The delays in effect (from ``timers`` when resolved, else from this process's environment)."""
        if self.timers is not None:
            return self.timers
        return Timers.resolve(self.behaviour, connect_error_backoff_ms=self.connect_error_backoff_ms,
                              channel_error_backoff_ms=self.channel_error_backoff_ms)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], env: dict[str, str] | None = None) -> ServerConfig:
        """Build a config from parsed JSON (and the environment for secrets)."""
        environ = dict(os.environ if env is None else env)
        if "db" not in data or not isinstance(data["db"], str):
            raise ConfigError('server config needs "db": a libpq conninfo for the metadata database')
        secrets: dict[str, Secret] = {}
        for key, env_name in _SECRET_ENVS.items():
            value = data.get(key) or environ.get(env_name)
            if not value:
                raise ConfigError(f'server config needs "{key}" (or the environment variable {env_name})')
            secrets[key] = Secret(str(value), key.upper())
        if len(secrets["db_enc_key"]) != 16:
            raise ConfigError(
                f"db_enc_key must be exactly 16 bytes, got {len(secrets['db_enc_key'])}; "
                "use the DB_ENC_KEY of the stack (compose default: supabaserealtime)"
            )
        if "password" in conninfo_to_dict(data["db"]):
            raise ConfigError(
                f'"db" must not contain a password; pass it in the environment variable {DB_PASSWORD_ENV}'
            )
        known = {f for f in cls.__dataclass_fields__} - {"timers", "db_password"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown server config keys: {', '.join(sorted(unknown))}")
        plain = {k: v for k, v in data.items() if k not in secrets and k != "db"}
        if plain.get("region") is None and environ.get("REGION"):
            plain["region"] = environ["REGION"]
        if plain.get("log_level") is None:
            plain["log_level"] = environ.get("LOG_LEVEL") or "info"
        if str(plain["log_level"]).lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug, info, warning or error, got {plain['log_level']!r}")
        channel = plain.get("cluster_channel")
        if channel is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", str(channel)):
            raise ConfigError(f"cluster_channel must be a lower-case SQL identifier, got {channel!r}")
        pw = environ.get(DB_PASSWORD_ENV)
        config = cls(
            db=data["db"],
            db_enc_key=secrets["db_enc_key"],
            api_jwt_secret=secrets["api_jwt_secret"],
            metrics_jwt_secret=secrets["metrics_jwt_secret"],
            db_password=Secret(pw, DB_PASSWORD_ENV) if pw else None,
            **plain,
        )
        config.timers = Timers.resolve(
            config.behaviour, environ, connect_error_backoff_ms=config.connect_error_backoff_ms,
            channel_error_backoff_ms=config.channel_error_backoff_ms,
        )
        return config

    @classmethod
    def load(cls, path: Path) -> ServerConfig:
        """Read the JSON config file at ``path``."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read server config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"server config {path} must hold a JSON object")
        return cls.from_mapping(data)

    def metadata_conninfo(self) -> str:
        """The metadata DB conninfo with the password from the environment."""
        extra: dict[str, str] = {"application_name": "supabase_mt_realtime", "options": "-c statement_timeout=10000"}
        if self.db_password is not None:
            extra["password"] = self.db_password.reveal()
        if "connect_timeout" not in conninfo_to_dict(self.db):
            extra["connect_timeout"] = "5"
        return make_conninfo(self.db, **extra)


@dataclass
class Tenant:
    """One row of ``_realtime.tenants`` with its decrypted secret and DB settings."""

    external_id: str
    jwt_secret: Secret | None
    jwt_jwks: dict[str, Any] | None
    max_concurrent_users: int
    max_events_per_second: int
    max_joins_per_second: int
    max_channels_per_client: int
    suspend: bool
    private_only: bool
    presence_enabled: bool
    extension_count: int
    settings: dict[str, Any] = field(default_factory=dict)
    db_host: str = ""
    db_port: int = 0
    db_name: str = ""
    db_user: str = ""
    db_password: Secret | None = None
    settings_error: str | None = None
    # None when _realtime.tenants has no migrations_ran column (images before it always migrate).
    migrations_ran: int | None = None

    @property
    def region(self) -> str | None:
        """The extension's region (us-east-1 for the seeded tenant)."""
        value = self.settings.get("region")
        return str(value) if value is not None else None

    @property
    def publication(self) -> str:
        """The publication postgres_changes subscriptions must be in."""
        return str(self.settings.get("publication") or "supabase_realtime")

    def conninfo(self, application_name: str) -> str:
        """libpq conninfo for the tenant DB (raises ConfigError when the extension row is unusable)."""
        if self.settings_error:
            raise ConfigError(self.settings_error)
        params: dict[str, str] = {
            "host": self.db_host,
            "port": str(self.db_port),
            "dbname": self.db_name,
            "user": self.db_user,
            "application_name": application_name,
            "connect_timeout": "5",
            # Nothing may hang: a stalled tenant DB fails the query instead of the socket.
            "options": "-c statement_timeout=10000",
        }
        if self.db_password is not None:
            params["password"] = self.db_password.reveal()
        if self.settings.get("ssl_enforced") is False:
            params["sslmode"] = "disable"
        return make_conninfo(**params)


_TENANT_SQL = """
SELECT t.external_id, t.jwt_secret, t.jwt_jwks, t.max_concurrent_users, t.max_events_per_second,
       t.max_joins_per_second, t.max_channels_per_client, coalesce(t.suspend, false),
       coalesce(t.private_only, false), to_jsonb(t) -> 'presence_enabled',
       CASE WHEN to_jsonb(t) ? 'migrations_ran' THEN coalesce((to_jsonb(t) ->> 'migrations_ran')::int, 0) END
FROM _realtime.tenants t WHERE t.external_id = %s
"""


class TenantStore:
    """Looks tenants up in the metadata DB, with a short cache so break scenarios apply fast."""

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._cache: dict[str, tuple[float, Tenant | None]] = {}

    async def close(self) -> None:
        """Close the metadata connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def check(self) -> None:
        """Connect and check that ``_realtime.tenants`` exists (Realtime refuses to boot otherwise).

        Raises:
            psycopg.Error: unreachable database, bad credentials or missing schema.
        """
        async with self._lock:
            conn = await self._connection()
            await conn.execute("SELECT 1 FROM _realtime.tenants LIMIT 1")

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(self._config.metadata_conninfo(), autocommit=True)
        return self._conn

    async def views(self, external_id: str | None = None) -> list[dict[str, Any]]:
        """Tenants as Realtime's admin API renders them (``tenant_view.ex``; no ``db_password``)."""
        query = (
            "SELECT to_jsonb(t), coalesce((SELECT jsonb_agg(jsonb_build_object("
            "'type', e.type, 'settings', e.settings - 'db_password', "
            "'inserted_at', e.inserted_at, 'updated_at', e.updated_at) ORDER BY e.inserted_at) "
            "FROM _realtime.extensions e WHERE e.tenant_external_id = t.external_id), '[]'::jsonb) "
            "FROM _realtime.tenants t"
        )
        params: tuple[Any, ...] = ()
        if external_id is not None:
            query += " WHERE t.external_id = %s"
            params = (external_id,)
        async with self._lock:
            conn = await self._connection()
            cur = await conn.execute(query + " ORDER BY t.inserted_at", params)
            rows = await cur.fetchall()
        keys = (
            "id", "external_id", "name", "max_concurrent_users", "max_channels_per_client", "max_events_per_second",
            "max_joins_per_second", "inserted_at", "private_only", "max_client_presence_events_per_window",
            "client_presence_window_ms", "presence_enabled",
        )
        views = []
        for tenant, extensions in rows:
            view = {k: tenant.get(k) for k in keys if k in tenant}
            view["extensions"] = extensions
            views.append(view)
        return views

    def invalidate(self, external_id: str | None = None) -> None:
        """Forget cached tenants (all, or one)."""
        if external_id is None:
            self._cache.clear()
        else:
            self._cache.pop(external_id, None)

    async def get(self, external_id: str) -> Tenant | None:
        """Return the tenant, or None when no row has this external id.

        Raises:
            psycopg.Error: the metadata database is unreachable.
        """
        ttl = self._config.tenant_cache_ttl_ms / 1000
        now = time.monotonic()
        hit = self._cache.get(external_id)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        async with self._lock:
            for attempt in (1, 2):
                try:
                    conn = await self._connection()
                    cur = await conn.execute(_TENANT_SQL, (external_id,))
                    row = await cur.fetchone()
                    exts: list[tuple[Any, ...]] = []
                    if row is not None:
                        cur = await conn.execute(
                            "SELECT settings FROM _realtime.extensions "
                            "WHERE tenant_external_id = %s AND type = 'postgres_cdc_rls'",
                            (external_id,),
                        )
                        exts = list(await cur.fetchall())
                    break
                except psycopg.OperationalError:
                    self._conn = None
                    if attempt == 2:
                        raise
        tenant = self._build(row, exts) if row is not None else None
        self._cache[external_id] = (time.monotonic(), tenant)
        return tenant

    def _build(self, row: tuple[Any, ...], exts: list[tuple[Any, ...]]) -> Tenant:
        key = self._config.db_enc_key
        ext_id, secret_cipher, jwks, users, eps, jps, chans, suspend, private_only, presence, migrations_ran = row
        secret: Secret | None = None
        if secret_cipher:
            try:
                secret = Secret(decrypt(secret_cipher, key), "jwt_secret")
            except (DecryptError, ConfigError) as exc:
                # Realtime cannot build a signer from a value it cannot decrypt.
                log.error("JwtSignerError: cannot decrypt the jwt_secret of tenant %s: %s", ext_id, exc)
                secret = None
        tenant = Tenant(
            external_id=ext_id,
            jwt_secret=secret,
            jwt_jwks=jwks if isinstance(jwks, dict) else None,
            max_concurrent_users=int(users),
            max_events_per_second=int(eps),
            max_joins_per_second=int(jps),
            max_channels_per_client=int(chans),
            suspend=bool(suspend),
            private_only=bool(private_only),
            presence_enabled=bool(presence) if presence is not None else False,
            extension_count=len(exts),
            migrations_ran=int(migrations_ran) if isinstance(migrations_ran, int) else None,
        )
        if len(exts) != 1:
            # Realtime pattern-matches exactly one postgres_cdc_rls row (0 or >= 2 crash the lookup).
            tenant.settings_error = (
                f"tenant {ext_id} has {len(exts)} postgres_cdc_rls extension rows; Realtime needs exactly one"
            )
            return tenant
        settings = exts[0][0] if isinstance(exts[0][0], dict) else {}
        tenant.settings = {k: v for k, v in settings.items() if k not in ("db_password",)}
        try:
            values = {}
            for name in ("db_host", "db_port", "db_name", "db_user", "db_password"):
                raw = settings.get(name)
                if not isinstance(raw, str) or not raw:
                    raise ConfigError(f"{name} is missing or not a string")
                values[name] = decrypt(raw, key)
            tenant.db_host = values["db_host"]
            tenant.db_port = int(values["db_port"])
            tenant.db_name = values["db_name"]
            tenant.db_user = values["db_user"]
            tenant.db_password = Secret(values["db_password"], "db_password")
        except (DecryptError, ConfigError, ValueError) as exc:
            tenant.settings_error = f"the postgres_cdc_rls settings of tenant {ext_id} are unusable: {exc}"
        return tenant


class AuthError(Exception):
    """A token was refused; ``reason`` is Realtime's atom, ``message`` its text."""

    def __init__(self, reason: str, message: str, code: str = "InvalidJWTToken") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.code = code


_HS = {"HS256", "HS384", "HS512"}


def _jwk_key(header: dict[str, Any], jwks: dict[str, Any] | None) -> Any:
    if not jwks or not isinstance(jwks.get("keys"), list):
        return None
    kid = header.get("kid")
    for entry in jwks["keys"]:
        if isinstance(entry, dict) and entry.get("kid") == kid:
            return jwt.PyJWK(entry).key
    raise AuthError(
        "error_generating_signer",
        f'Failed to generate JWT signer for key ID (kid) "{kid}", check your JWT secret or JWKS configuration',
        "JwtSignerError",
    )


def verify_jwt(
    token: str | None, secret: Secret | None, jwks: dict[str, Any] | None = None, *, require_claims: bool = True
) -> dict[str, Any]:
    """Verify ``token`` like Realtime and return its claims.

    Raises:
        AuthError: with Realtime's reason and message.
    """
    if token is None:
        raise AuthError("missing_api_key", "API key is missing", "MissingAPIKey")
    token = "".join(token.split())
    if not token:
        # An empty string is a token: Joken cannot read its header (Realtime answers MalformedJWT).
        raise AuthError("token_malformed", "The token provided is not a valid JWT", "MalformedJWT")
    try:
        claims_peek = jwt.decode(token, options={"verify_signature": False})
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthError("token_malformed", "The token provided is not a valid JWT", "MalformedJWT") from exc
    if not isinstance(claims_peek, dict):
        raise AuthError("token_malformed", "The token provided is not a valid JWT", "MalformedJWT")
    alg = str(header.get("alg", ""))
    key: Any
    if alg in _HS and (not jwks or header.get("kid") is None):
        if secret is None:
            raise AuthError(
                "error_generating_signer",
                "Failed to generate JWT signer, check your JWT secret or JWKS configuration",
                "JwtSignerError",
            )
        key = secret.reveal().encode()
    else:
        key = _jwk_key(header, jwks)
        if key is None:
            raise AuthError(
                "error_generating_signer",
                "Failed to generate JWT signer, check your JWT secret or JWKS configuration",
                "JwtSignerError",
            )
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[alg],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise AuthError("signature_error", "Failed to validate JWT signature", "JwtSignatureError") from exc
    except jwt.PyJWTError as exc:
        raise AuthError("token_malformed", "The token provided is not a valid JWT", "MalformedJWT") from exc
    exp = claims.get("exp")
    now = time.time()
    if exp is not None:
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthError("expired_token", "Token expiration time is invalid")
        if exp <= now:
            raise AuthError("expired_token", f"Token has expired {int(now - exp)} seconds ago")
    if "iat" in claims and not isinstance(claims["iat"], int | float):
        raise AuthError("token_malformed", "The token provided is not a valid JWT", "MalformedJWT")
    if require_claims and ("role" not in claims or "exp" not in claims):
        raise AuthError("missing_claims", "Fields `role` and `exp` are required in JWT")
    return dict(claims)
