"""What is under test: the stack's files plus the endpoints that live checks talk to.

A :class:`Target` is built from parameters (notebook cell, CLI flags, widget form). It holds no
secret itself: secrets are looked up on demand, from the process environment first and then
from the stack's ``.env`` and the Realtime service's resolved environment, and every value
found is registered with the target's redactor so that it never reaches an output.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtbook.config.gateway import implied_tenant
from rtbook.config.stack import Stack
from rtbook.exceptions import ConfigError
from rtbook.secrets import Redactor, Secret

__all__ = ["DEFAULT_SANDBOX", "DEFAULT_TENANT", "Target", "sandbox_state_path"]

DEFAULT_TENANT = "realtime-dev"


DEFAULT_SANDBOX = "default"
# A sandbox name becomes a folder name: no separators, no dot-dot, not too long for a socket path.
_SANDBOX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


def sandbox_state_path(name: str | None = None, *, home: str | Path | None = None) -> Path:
    """Where ``rtbook sandbox up`` records the sandbox instance ``name``.

    ``name`` defaults to ``$RTBOOK_SANDBOX``, else ``default``. The default instance keeps the
    original place, ``$RTBOOK_HOME/sandbox/state.json``; another instance ``N`` has its own folder,
    ``$RTBOOK_HOME/sandbox/instances/N/`` (so two sandboxes never share state, ports or files).
    ``home`` replaces ``$RTBOOK_HOME``.
    """
    base = Path(home) if home is not None else Path(
        os.environ.get("RTBOOK_HOME") or str(Path.home() / ".cache" / "rtbook"))
    name = name or os.environ.get("RTBOOK_SANDBOX") or DEFAULT_SANDBOX
    if not _SANDBOX_NAME.fullmatch(name):
        raise ConfigError(f"sandbox name {name!r} is not valid; use 1-40 letters, digits, '-' or '_' "
                          "(check --name and $RTBOOK_SANDBOX)")
    if name == DEFAULT_SANDBOX:
        return base / "sandbox" / "state.json"
    return base / "sandbox" / "instances" / name / "state.json"


@dataclass
class Target:
    """The stack under test and how to reach it.

    Attributes:
        name: a label for reports and audit records (``sandbox``, ``staging``...).
        stack: the parsed stack files, or None when only endpoints are known.
        api_url: the public gateway URL (Kong), e.g. ``http://localhost:8000``.
        realtime_url: Realtime reached directly, e.g. ``http://127.0.0.1:4000``; requests carry
            ``realtime_host`` as their Host header because Realtime takes the tenant from it.
        realtime_host: the Host header for direct requests (default ``<tenant>.supabase-realtime``).
        db_url: SQLAlchemy/libpq URL of the database **without** its password.
        tenant: the tenant id (default: what the stack implies, else ``realtime-dev``).
        tables: ``schema.table`` names the user wants checked (empty: every table in the publication).
        tables_from: where ``tables`` came from when the user did not name them (e.g. "the sandbox's
            application tables"); empty means the user named them. Findings word their scope with it.
        docker: True to require the Docker checks, False to skip them, None to run them when an
            engine answers.
        timeout: seconds allowed for each network operation.
        env: extra variables consulted before the stack's files (never written to outputs).
        lb: load-balancer config files in front of the stack (``FILE`` or ``KIND:FILE``, as ``--lb`` takes them).
    """

    name: str = "custom"
    stack: Stack | None = None
    api_url: str | None = None
    realtime_url: str | None = None
    realtime_host: str | None = None
    db_url: str | None = None
    tenant: str | None = None
    tables: tuple[str, ...] = ()
    tables_from: str = ""
    docker: bool | None = None
    timeout: float = 10.0
    lb: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    redactor: Redactor = field(default_factory=Redactor, repr=False)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        for label in ("api_url", "realtime_url"):
            url = getattr(self, label)
            if url is not None:
                if not url.startswith(("http://", "https://")):
                    raise ConfigError(
                        f"{label} must start with http:// or https://, got {url!r}; "
                        "give the base URL, e.g. http://localhost:8000"
                    )
                setattr(self, label, url.rstrip("/"))
        if self.db_url and "@" in self.db_url.split("://", 1)[-1].split("/", 1)[0]:
            userinfo = self.db_url.split("://", 1)[-1].split("@", 1)[0]
            if ":" in userinfo:
                raise ConfigError(
                    "db_url must not contain a password (it would be copied into outputs); "
                    "remove it from the URL and set POSTGRES_PASSWORD in the environment or the stack's .env"
                )
        self.tables = tuple(self.tables)
        if self.stack is not None:
            self.redactor.extend(self.stack.redactor())
        self.redactor.add_env({k: v for k, v in os.environ.items() if k in _KNOWN_SECRET_VARS})
        self.redactor.add_env(self.env)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_stack_dir(cls, stack_dir: str | Path, **kwargs: Any) -> Target:
        """Load the stack in ``stack_dir`` and wrap it in a target."""
        return cls(stack=Stack.load(stack_dir), **kwargs)

    @classmethod
    def from_sandbox(cls, state_file: str | Path | None = None, **kwargs: Any) -> Target:
        """Target the running sandbox, as recorded by ``rtbook sandbox up``."""
        path = Path(state_file) if state_file else sandbox_state_path()
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"no running sandbox: {path} does not exist; start one with 'rtbook sandbox up'"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read sandbox state {path}: {exc}; run 'rtbook sandbox down' and up again"
            ) from exc
        kwargs.setdefault("name", "sandbox")
        kwargs.setdefault("api_url", state.get("gateway_url"))
        kwargs.setdefault("realtime_url", state.get("realtime_url"))
        kwargs.setdefault("realtime_host", state.get("realtime_host"))
        kwargs.setdefault("db_url", state.get("db_url"))
        kwargs.setdefault("tenant", state.get("tenant"))
        # An explicit empty tuple means "every table in the publication", as for any target.
        if "tables" not in kwargs and state.get("tables"):
            kwargs["tables"] = tuple(state["tables"])
            kwargs.setdefault("tables_from", "the sandbox's application tables")
        kwargs.setdefault("docker", False)
        return cls.from_stack_dir(state["stack_dir"], **kwargs)

    # ------------------------------------------------------------ lookups
    def has(self, need: str) -> bool:
        """Whether the target provides ``need`` (stack, db, gateway, realtime, docker)."""
        if need == "stack":
            return self.stack is not None
        if need == "db":
            return bool(self.db_url)
        if need == "gateway":
            return bool(self.api_url)
        if need == "realtime":
            return bool(self.realtime_url or self.api_url)
        if need == "realtime_direct":
            return bool(self.realtime_url)
        if need == "docker":
            return self.docker is not False
        if need == "lb":
            return bool(self.lb)
        raise ConfigError(f"unknown need {need!r}")

    def why_missing(self, need: str) -> str:
        """A sentence telling the user how to provide ``need``."""
        return {
            "stack": "pass --stack DIR or the stack_dir parameter",
            "db": "pass --db-url or the db_url parameter (the password comes from POSTGRES_PASSWORD)",
            "gateway": "pass --api-url or the api_url parameter, e.g. http://localhost:8000",
            "realtime": "pass --api-url (through the gateway) or --realtime-url (direct)",
            "realtime_direct": "pass --realtime-url to reach Realtime without the gateway",
            # Say what was configured: 'off' was chosen by the user; the sandbox simply runs no containers.
            "docker": "the embedded sandbox runs local processes, not containers" if self.name == "sandbox"
            else "Docker checks were turned off (docker=off)",
            "lb": "pass --lb FILE (nginx, HAProxy, Caddy, Traefik or AWS ALB config) to have it checked",
        }.get(need, need)

    def lookup(self, name: str) -> str | None:
        """Return a variable from the target env, the process env, the stack's .env or Realtime's env."""
        for source in self._sources():
            value = source.get(name)
            if isinstance(value, str) and value:
                return value
        return None

    def secret(self, name: str) -> Secret | None:
        """Return the secret ``name`` (e.g. ``ANON_KEY``) wrapped in :class:`Secret`, or None."""
        value = self.lookup(name)
        if value is None:
            return None
        self.redactor.add(value)
        return Secret(value, name)

    def require_secret(self, name: str, *alternatives: str) -> Secret:
        """Like :meth:`secret` but raise ConfigError naming where to set it when absent."""
        for candidate in (name, *alternatives):
            found = self.secret(candidate)
            if found is not None:
                return found
        names = " or ".join((name, *alternatives))
        raise ConfigError(
            f"{names} is not set; export it in the environment or put it in the stack's .env "
            "(secrets are never taken from notebook parameters)"
        )

    def _sources(self) -> Sequence[Mapping[str, str]]:
        sources: list[Mapping[str, str]] = [self.env, os.environ]
        if self.stack is not None:
            sources.append(self.stack.env)
            realtime = self.stack.realtime_service()
            if realtime is not None:
                sources.append(realtime.environment)
        return sources

    def resolved_tenant(self) -> str:
        """The tenant id to test: explicit, else what the stack implies, else ``realtime-dev``."""
        if self.tenant:
            return self.tenant
        if self.stack is not None:
            return implied_tenant(self.stack)
        return DEFAULT_TENANT


# Variables read from the process environment that are always treated as secret.
_KNOWN_SECRET_VARS = frozenset(
    {
        "ANON_KEY",
        "SERVICE_ROLE_KEY",
        "JWT_SECRET",
        "API_JWT_SECRET",
        "POSTGRES_PASSWORD",
        "DB_PASSWORD",
        "DB_ENC_KEY",
        "SECRET_KEY_BASE",
        "METRICS_JWT_SECRET",
        "DASHBOARD_PASSWORD",
        "SUPABASE_SECRET_KEY",
        "SUPABASE_PUBLISHABLE_KEY",
        "VAULT_ENC_KEY",
        "PG_META_CRYPTO_KEY",
    }
)
