"""The sandbox's stack directory: the official files with the sandbox's ports and fresh secrets.

``write_stack_dir`` lays out ``DIR/`` like ``supabase/docker``: ``docker-compose.yml``,
``docker-compose.kong.yml`` (selected through ``COMPOSE_FILE`` in ``.env``, as users of the Kong
overlay do), ``.env`` (from ``env.example`` with generated secrets), ``volumes/api/kong.yml``,
``volumes/api/kong-entrypoint.sh`` and ``volumes/db/realtime.sql``. Only ``.env`` values change;
container names and upstream hosts stay as shipped, so the tenant logic is the real one.

Sandbox choices, each recorded here because the checks see them:
- ``POSTGRES_HOST=127.0.0.1`` and ``POSTGRES_PORT`` = the throwaway cluster's port: everything runs on
  one machine, and the seeded tenant row holds the same host and port as Realtime's ``DB_HOST``/``DB_PORT``.
- ``KONG_HTTP_PORT`` = the gateway's port; ``API_EXTERNAL_URL``/``SUPABASE_PUBLIC_URL`` point at it.

It also reads back what the gateway needs: the kong service's environment after compose
interpolation (:func:`kong_environment`) and the compose host names (:func:`compose_hosts`).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jwt
import yaml

from rtbook.bounded import check_yaml_shape, read_text
from rtbook.exceptions import InputError, SandboxError

__all__ = [
    "BUNDLED_FILES",
    "REALTIME_HOST",
    "bundled_dir",
    "compose_hosts",
    "generate_secrets",
    "interpolate",
    "kong_environment",
    "kong_image_version",
    "load_compose",
    "read_env",
    "realtime_image_version",
    "write_stack_dir",
]

REALTIME_HOST = "realtime-dev.supabase-realtime"
BUNDLED_FILES = (
    "docker-compose.yml",
    "docker-compose.kong.yml",
    "env.example",
    "volumes/api/kong.yml",
    "volumes/api/kong-entrypoint.sh",
    "volumes/db/realtime.sql",
)
COMPOSE_FILE = "docker-compose.yml:docker-compose.kong.yml"
KONG_SERVICE = "api-gw"


def bundled_dir() -> Path:
    """Where the unedited official files ship inside the package (``rtbook/data/official``)."""
    path = Path(str(resources.files("rtbook") / "data" / "official"))
    missing = [name for name in BUNDLED_FILES if not (path / name).is_file()]
    if missing:
        raise SandboxError(f"the packaged official stack files are missing under {path}: {', '.join(missing)}; "
                           "reinstall rtbook")
    return path


def _jwt(role: str, secret: str, now: int) -> str:
    # Same claims as the keys the official docs generate: role, iss, iat, exp (5 years).
    return jwt.encode({"role": role, "iss": "supabase", "iat": now, "exp": now + 5 * 365 * 86400}, secret,
                      algorithm="HS256")


def generate_secrets() -> dict[str, str]:
    """Fresh values for every secret ``.env`` key of the official stack.

    ``JWT_SECRET`` has 64 characters, ``ANON_KEY``/``SERVICE_ROLE_KEY`` are HS256 JWTs signed with
    it, ``REALTIME_DB_ENC_KEY`` has exactly 16 characters (AES-128), ``SECRET_KEY_BASE`` 64.
    Values use URL-safe characters only, so they survive URLs and shell quoting.
    """
    now = int(time.time())
    jwt_secret = secrets.token_urlsafe(48)
    return {
        "POSTGRES_PASSWORD": secrets.token_hex(20),
        "JWT_SECRET": jwt_secret,
        "ANON_KEY": _jwt("anon", jwt_secret, now),
        "SERVICE_ROLE_KEY": _jwt("service_role", jwt_secret, now),
        "DASHBOARD_USERNAME": "supabase",
        "DASHBOARD_PASSWORD": secrets.token_urlsafe(24),
        "SECRET_KEY_BASE": secrets.token_urlsafe(48),
        "REALTIME_DB_ENC_KEY": secrets.token_hex(8),
        "VAULT_ENC_KEY": secrets.token_hex(16),
        "PG_META_CRYPTO_KEY": secrets.token_hex(16),
        "LOGFLARE_PUBLIC_ACCESS_TOKEN": secrets.token_urlsafe(32),
        "LOGFLARE_PRIVATE_ACCESS_TOKEN": secrets.token_urlsafe(32),
        "S3_PROTOCOL_ACCESS_KEY_ID": secrets.token_hex(16),
        "S3_PROTOCOL_ACCESS_KEY_SECRET": secrets.token_hex(32),
        "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(24),
    }


def write_stack_dir(dest: Path, values: Mapping[str, str], *, gateway_port: int, db_port: int) -> Path:
    """Write the stack directory; ``values`` are the generated secrets (see :func:`generate_secrets`).

    Raises:
        SandboxError: ``dest`` exists and is not empty, or cannot be written.
    """
    src = bundled_dir()
    if dest.exists() and any(dest.iterdir()):
        raise SandboxError(f"stack directory {dest} is not empty; pass an empty or new --dir")
    try:
        for name in BUNDLED_FILES:
            if name == "env.example":
                continue
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, target)
        (dest / "env.example").write_text((src / "env.example").read_text())
        url = f"http://localhost:{gateway_port}"
        overrides = {
            **values,
            "COMPOSE_FILE": COMPOSE_FILE,
            "KONG_HTTP_PORT": str(gateway_port),
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(db_port),
            "API_EXTERNAL_URL": url,
            "SUPABASE_PUBLIC_URL": url,
        }
        env_path = dest / ".env"
        fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(render_env((src / "env.example").read_text(), overrides))
    except OSError as exc:
        raise SandboxError(f"cannot write the stack directory {dest}: {exc.strerror}") from None
    return dest


def render_env(example: str, overrides: Mapping[str, str]) -> str:
    """``env.example`` with the values of ``overrides`` set (unknown keys appended at the end)."""
    out, seen = [], set()
    for line in example.splitlines():
        name = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and name in overrides:
            out.append(f"{name}={overrides[name]}")
            seen.add(name)
        else:
            out.append(line)
    extra = [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    if extra:
        out += ["", "# added by rtbook sandbox", *extra]
    return "\n".join(out) + "\n"


def read_env(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file the way docker compose does for plain ``KEY=value`` lines (quotes removed)."""
    env: dict[str, str] = {}
    try:
        text = read_text(path, "env file")  # bounded: the stack folder is the user's to edit
    except InputError as exc:
        raise SandboxError(str(exc)) from None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        name, _, value = stripped.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[name.strip().removeprefix("export ").strip()] = value
    return env


_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z_0-9]*)(?:(:?[-?+])(.*))?\}$", re.S)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose-style interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, nested."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            depth, j = 0, i + 1
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            m = _BRACED.match(text[i : j + 1])
            if not m:
                raise SandboxError(f"cannot interpolate {text[i:j + 1]!r}")
            name, op, arg = m.group(1), m.group(2), m.group(3)
            value = env.get(name)
            if op in (":-", "-"):
                use_default = value is None or (op == ":-" and value == "")
                out.append(interpolate(arg, env) if use_default else str(value))
            elif op in (":+", "+"):
                use_alt = value is not None and (op == "+" or value != "")
                out.append(interpolate(arg, env) if use_alt else "")
            elif op in (":?", "?"):
                if value is None or (op == ":?" and value == ""):
                    raise SandboxError(f"required variable {name} is not set: {arg}")
                out.append(value)
            else:
                out.append(value or "")
            i = j + 1
        else:
            m2 = re.match(r"[A-Za-z_][A-Za-z_0-9]*", text[i + 1 :])
            if m2:
                out.append(env.get(m2.group(0), ""))
                i += 1 + m2.end()
            else:
                out.append("$")
                i += 1
    return "".join(out)


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that reads compose's ``!override``/``!reset`` tags as plain values."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_ComposeLoader.add_constructor("!override", _tagged)
_ComposeLoader.add_constructor("!reset", _tagged)


def load_compose(path: Path) -> dict[str, Any]:
    """One compose file as a dict (tags resolved to their values)."""
    try:
        text = read_text(path, "compose file")  # bounded, and no alias bomb or deep nesting below
        check_yaml_shape(text, path)
        data = yaml.load(text, Loader=_ComposeLoader)  # a SafeLoader subclass
    except InputError as exc:
        raise SandboxError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise SandboxError(f"cannot read compose file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SandboxError(f"{path} is not a compose file (no top-level mapping)")
    return data


def _compose_files(stack_dir: Path, env: Mapping[str, str]) -> list[Path]:
    names = (env.get("COMPOSE_FILE") or "docker-compose.yml").split(":")
    return [stack_dir / n for n in names if n]


def _environment(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k): "" if v is None else str(v) for k, v in raw.items()}
    out: dict[str, str] = {}
    for item in raw or []:
        name, _, value = str(item).partition("=")
        out[name] = value
    return out


def kong_environment(stack_dir: Path) -> dict[str, str]:
    """The gateway container's environment: ``api-gw`` in the compose files named by ``COMPOSE_FILE``, interpolated."""
    env = read_env(stack_dir / ".env")
    merged: dict[str, str] = {}
    found = False
    for path in _compose_files(stack_dir, env):
        service = (load_compose(path).get("services") or {}).get(KONG_SERVICE)
        if isinstance(service, dict) and "environment" in service:
            found = True
            # The Kong overlay marks its environment !override: later files replace, not merge.
            merged = _environment(service["environment"])
    if not found:
        raise SandboxError(f"no {KONG_SERVICE} environment in the compose files of {stack_dir}")
    return {k: interpolate(v, env) for k, v in merged.items()}


def compose_hosts(stack_dir: Path) -> dict[str, str]:
    """Every name compose's DNS would resolve (service names, container names, aliases) → service name."""
    env = read_env(stack_dir / ".env")
    hosts: dict[str, str] = {}
    for path in _compose_files(stack_dir, env):
        for name, service in (load_compose(path).get("services") or {}).items():
            if not isinstance(service, dict):
                continue
            hosts[str(name)] = str(name)
            if service.get("container_name"):
                hosts[interpolate(str(service["container_name"]), env)] = str(name)
            networks = service.get("networks")
            if isinstance(networks, dict):
                for net in networks.values():
                    for alias in (net or {}).get("aliases") or []:
                        hosts[str(alias)] = str(name)
    return hosts


def kong_image_version(stack_dir: Path, default: str = "3.9.3") -> str:
    """The Kong version the gateway service's image names (``kong/kong:3.9.3`` -> ``3.9.3``, ``kong:2.8.1``)."""
    env = read_env(stack_dir / ".env")
    version = default
    for path in _compose_files(stack_dir, env):
        service = (load_compose(path).get("services") or {}).get(KONG_SERVICE)
        image = interpolate(str(service.get("image") or ""), env) if isinstance(service, dict) else ""
        if image.split("@", 1)[0].rsplit("/", 1)[-1].startswith(("kong:", "kong-gateway:")):
            m = re.match(r"(\d+\.\d+(?:\.\d+)?)", image.split("@", 1)[0].rsplit(":", 1)[-1])
            if m:
                version = m.group(1)  # later compose files override earlier ones
    return version


def realtime_image_version(stack_dir: Path, default: str = "2.78.15") -> str:
    """The Realtime tag the stack's compose names (``supabase/realtime:v2.134.10`` → ``2.134.10``)."""
    env = read_env(stack_dir / ".env")
    for path in _compose_files(stack_dir, env):
        service = (load_compose(path).get("services") or {}).get("realtime")
        if isinstance(service, dict) and service.get("image"):
            tag = interpolate(str(service["image"]), env).rsplit(":", 1)[-1]
            m = re.match(r"v?(\d+\.\d+\.\d+)", tag)
            if m:
                return m.group(1)
    return default
