"""The stack file changes of a tenant rename, add or remove: compose override, Kong ``kong.yml``, Envoy ``lds``/``cds``.

Edits are made on the text, line by line, never by loading and dumping the YAML: the official
``kong.yml`` is a template the Kong entrypoint expands (``$SUPABASE_ANON_KEY``, ``$LUA_AUTH_EXPR``)
and the Envoy templates carry ``${VARS}`` and Lua code, so only the lines that name the Realtime
host change and everything else stays byte for byte. The compose part is a
``docker-compose.override.yml`` (compose merges it over the base file), so the user's compose
file is never rewritten. Nothing here writes anywhere: callers get :class:`FileChange` values.

Multi-tenant routing follows how Kong picks a route (Kong 2.8.1 ``kong/router.lua``
``sort_routes``; 3.9.3 ``kong/router/transform.lua`` ``get_priority``): a route with ``hosts``
*and* ``paths`` has more match criteria than a ``paths``-only route, so for its public host it wins
whatever the path lengths, and every other host still reaches the original routes. Each added
route's service points at ``<tenant>.<rest of the Realtime host>``, a network alias of the Realtime
container, so Realtime reads the tenant from the first label of the Host Kong sends. Envoy picks
the virtual host by the most specific ``domains`` entry (an exact name beats ``*``), so an added
tenant is a copy of the virtual host with its own domain and ``host_rewrite_literal``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rtbook.config.envoy import load_envoy_detailed
from rtbook.config.gateway import RealtimeUpstream, implied_tenant, realtime_upstream, tenant_of
from rtbook.config.images import parse_version
from rtbook.config.kong import load_kong
from rtbook.config.stack import Service, Stack, load_compose_file
from rtbook.exceptions import InputError

__all__ = [
    "FileChange",
    "StackFiles",
    "add_files",
    "remove_files",
    "rename_files",
    "swap_tenant",
    "validate_tenant",
]

# A tenant is the first DNS label of a Host header (Realtime.Database.get_external_id splits on "."),
# and the same label names a container / network alias, so it must be a valid lowercase DNS label.
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_TENANT_NAME_SINCE = (2, 33, 68)  # Realtime reads SELF_HOST_TENANT_NAME in its seed from this release
_HEADER = "# Written by rtbook ({what}). Review it, then copy it next to your docker-compose.yml.\n"


def validate_tenant(name: str) -> str:
    """``name`` if it can be a tenant (one lowercase DNS label); else InputError naming the value and the fix."""
    if not _LABEL.match(name or ""):
        raise InputError(f"tenant name {name!r} is not one lowercase DNS label; use letters a-z, digits and '-' "
                         "(at most 63, not starting or ending with '-'), e.g. my-tenant")
    return name


def swap_tenant(host: str, tenant: str) -> str:
    """``host`` with its first label (the tenant Realtime reads) replaced by ``tenant``."""
    rest = host.split(".", 1)[1] if "." in host else ""
    return f"{tenant}.{rest}" if rest else tenant


@dataclass(frozen=True)
class FileChange:
    """One file of the stack as rtbook would have it.

    Attributes:
        path: relative to the stack directory (``/`` separated).
        before: the current text, or None for a new file.
        after: the proposed text.
        why: what the change does, in words.
        patch_only: show and write only the diff (``.env`` holds secrets: its other lines never leave it).
    """

    path: str
    before: str | None
    after: str
    why: str
    patch_only: bool = False

    def diff(self) -> str:
        """A unified diff (``a/PATH`` → ``b/PATH``), no context lines when ``patch_only``."""
        def lines(text: str | None) -> list[str]:
            out = (text or "").splitlines(keepends=True)
            if out and not out[-1].endswith("\n"):
                out[-1] += "\n"
            return out

        return "".join(difflib.unified_diff(
            lines(self.before), lines(self.after), "/dev/null" if self.before is None else f"a/{self.path}",
            f"b/{self.path}", n=0 if self.patch_only else 3))

    @property
    def out_name(self) -> str:
        """The file written under ``--out``: the file itself, or ``PATH.patch`` when only the diff may leave."""
        return f"{self.path}.patch" if self.patch_only else self.path

    def out_text(self) -> str:
        """What ``--out`` writes."""
        return self.diff() if self.patch_only else self.after


@dataclass
class StackFiles:
    """File changes plus what could not be changed (``notes``) and what blocks the plan (``blocked``)."""

    changes: list[FileChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocked: str = ""
    old_tenant: str = ""
    hosts: dict[str, str] = field(default_factory=dict)  # old Realtime host -> new one


# ------------------------------------------------------------------ helpers


def _rel(stack: Stack, path: Path) -> str:
    try:
        return path.resolve().relative_to(Path(stack.root).resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def _realtime(stack: Stack) -> Service:
    rt = stack.realtime_service()
    if rt is None:
        raise InputError(f"{stack.root}: the compose files have no Realtime service (image supabase/realtime); "
                         "pass the supabase docker directory with --stack")
    return rt


def _unwrap(value: Any) -> Any:
    # rtbook's compose loader keeps !override / !reset values wrapped; the raw value is inside.
    return getattr(value, "value", value)


def _raw_service(stack: Stack, name: str, key: str) -> Any:
    """The last raw (not interpolated) value of ``services.<name>.<key>`` across the compose files."""
    found: Any = None
    for path in stack.compose_files:
        try:
            data = load_compose_file(path)
        except InputError:
            continue
        service = _unwrap((_unwrap(data.get("services")) or {}).get(name))
        if isinstance(service, Mapping) and key in service:
            found = _unwrap(service[key])
    return found


def _health_swap(test: Any, old: str, new: str) -> Any:
    pattern = re.compile(r"(/api/tenants/)" + re.escape(old) + r"(/health)")
    if isinstance(test, str):
        return pattern.sub(rf"\g<1>{new}\g<2>", test)
    if isinstance(test, list):
        return [pattern.sub(rf"\g<1>{new}\g<2>", str(t)) for t in test]
    return test


def _override_path(stack: Stack) -> tuple[Path, bool]:
    """The override file rtbook writes and whether compose already reads it."""
    listed = [p for p in stack.compose_files if ".override." in p.name]
    if listed:
        return listed[-1], True
    base = stack.compose_files[0] if stack.compose_files else Path(stack.root) / "docker-compose.yml"
    path = base.with_name(base.stem + ".override" + base.suffix)
    return path, False


def _compose_file_spec(stack: Stack) -> tuple[str | None, str]:
    """COMPOSE_FILE as the ``.env`` text sets it (raw line value), and the .env text."""
    env_path = stack.env_file
    if env_path is None or not Path(env_path).is_file():
        return None, ""
    text = Path(env_path).read_text(encoding="utf-8")
    value = None
    for line in text.splitlines():
        m = re.match(r"^\s*(?:export\s+)?COMPOSE_FILE\s*=\s*(.*)$", line)
        if m:
            value = m.group(1).strip()
    return value, text


def _override_changes(stack: Stack, rt: Service, service_patch: Mapping[str, Any], what: str,
                      out: StackFiles, *, remove_aliases: tuple[str, ...] = ()) -> None:
    """Merge ``service_patch`` into the stack's override file for ``rt`` (creating the file if needed)."""
    path, read = _override_path(stack)
    before = path.read_text(encoding="utf-8") if path.is_file() else None
    data: dict[str, Any] = {}
    if before is not None:
        try:
            loaded = yaml.safe_load(before)
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix it first") from None
        data = dict(loaded) if isinstance(loaded, Mapping) else {}
    services = data.setdefault("services", {}) or {}
    data["services"] = services
    svc = dict(services.get(rt.name) or {})
    for key, value in service_patch.items():
        if key == "environment":
            env = svc.get("environment") or {}
            if isinstance(env, list):  # list form: NAME=value
                env = {str(e).partition("=")[0]: (str(e).partition("=")[2] if "=" in str(e) else None) for e in env}
            env = dict(env)
            env.update(value)
            svc["environment"] = env
        elif key == "networks":
            nets = svc.get("networks") or {}
            if isinstance(nets, list):
                nets = {str(n): {} for n in nets}
            nets = dict(nets)
            for net, aliases in value.items():
                cfg = dict(nets.get(net) or {})
                have = [a for a in (cfg.get("aliases") or []) if a not in aliases]
                cfg["aliases"] = have + [a for a in aliases if a not in have]
                nets[net] = cfg
            svc["networks"] = nets
        else:
            svc[key] = value
    if remove_aliases:
        nets = svc.get("networks") or {}
        if isinstance(nets, Mapping):
            for cfg in nets.values():
                if isinstance(cfg, dict) and isinstance(cfg.get("aliases"), list):
                    cfg["aliases"] = [a for a in cfg["aliases"] if a not in remove_aliases]
    services[rt.name] = svc
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=1000)
    if before is None:
        header = _HEADER.format(what=what)
    elif before.startswith("#"):
        header = before.splitlines(keepends=True)[0]
    else:
        header = ""
        out.notes.append(f"{path.name} is rewritten from its parsed YAML: comments in it are not kept")
    after = header + body
    rel = _rel(stack, path)
    if before != after:
        out.changes.append(FileChange(rel, before, after, f"services.{rt.name}: " + ", ".join(service_patch)
                                      if service_patch else f"services.{rt.name}: aliases removed"))
    if read:
        return
    spec, env_text = _compose_file_spec(stack)
    if spec is None:
        if stack.env.get("COMPOSE_FILE") or (stack._environ or {}).get("COMPOSE_FILE"):
            out.notes.append(f"COMPOSE_FILE is set outside .env: add {path.name} to it, or compose will not read "
                             "the override")
        return  # compose reads docker-compose.override.yml by itself
    sep = stack.env.get("COMPOSE_PATH_SEPARATOR") or ":"
    quote = spec[0] if spec[:1] in ("'", '"') and spec[-1:] == spec[:1] else ""
    inner = spec[1:-1] if quote else spec
    new_spec = f"{quote}{inner}{sep}{path.name}{quote}"
    lines = env_text.splitlines(keepends=True)
    for i in range(len(lines) - 1, -1, -1):
        if re.match(r"^\s*(?:export\s+)?COMPOSE_FILE\s*=", lines[i]):
            end = "\n" if lines[i].endswith("\n") else ""
            lines[i] = re.sub(r"=.*$", "=" + new_spec.replace("\\", "\\\\"), lines[i].rstrip("\n")) + end
            break
    env_rel = _rel(stack, Path(stack.env_file)) if stack.env_file else ".env"
    out.changes.append(FileChange(env_rel, env_text, "".join(lines),
                                  f"COMPOSE_FILE lists the compose files, so add {path.name} to it", patch_only=True))


# ------------------------------------------------------------------ gateway text edits


def _kong_path(stack: Stack) -> Path:
    path = stack.kong_file()
    if path is None or not Path(path).is_file():
        raise InputError(f"{stack.root}: the stack runs Kong but its kong.yml file was not found; pass --kong FILE")
    return Path(path)


def _swap_hosts_in_lines(text: str, hosts: Mapping[str, str], patterns: tuple[str, ...]) -> tuple[str, int]:
    """Replace each old host by its new one where a line matches one of ``patterns`` (``{host}`` placeholder)."""
    count = 0
    out = []
    for line in text.splitlines(keepends=True):
        if not line.lstrip().startswith("#"):
            for old, new in hosts.items():
                for pat in patterns:
                    rx = re.compile(pat.format(host=re.escape(old)))
                    line, n = rx.subn(_keep_prefix(new), line)
                    count += n
        out.append(line)
    return "".join(out), count


def _keep_prefix(new: str) -> Callable[[re.Match[str]], str]:
    return lambda m: m.group("pre") + new


_KONG_HOST_LINES = (
    r"(?P<pre>\burl:\s*['\"]?[A-Za-z]+://){host}(?=[:/'\"\s]|$)",
    r"(?P<pre>^\s*host:\s*['\"]?){host}(?=['\"\s]|$)",
)
_LDS_HOST_LINES = (r"(?P<pre>\bhost_rewrite_literal:\s*['\"]?){host}(?=['\"\s:]|$)",)
_CDS_HOST_LINES = (r"(?P<pre>^\s*address:\s*['\"]?){host}(?=['\"\s]|$)",)


def _envoy_paths(stack: Stack) -> dict[str, Path]:
    loaded = load_envoy_detailed(stack)
    if loaded is None:
        return {}
    out = {}
    for kind, shown in loaded.files.items():
        p = Path(shown)
        out[kind] = p if p.is_absolute() else Path(stack.root) / p
    return out


def _gateway_host_changes(stack: Stack, up: RealtimeUpstream, hosts: Mapping[str, str], out: StackFiles) -> None:
    if up.kind == "kong":
        path = _kong_path(stack)
        before = path.read_text(encoding="utf-8")
        after, n = _swap_hosts_in_lines(before, hosts, _KONG_HOST_LINES)
        if n:
            out.changes.append(FileChange(_rel(stack, path), before, after,
                                          f"the Realtime services' upstream host: {_pairs(hosts)} ({n} line(s))"))
        else:
            out.notes.append(f"{_rel(stack, path)} does not name {', '.join(hosts)} literally (a variable?): set the "
                             f"Realtime services' url host to {', '.join(hosts.values())} where it comes from")
    elif up.kind == "envoy":
        paths = _envoy_paths(stack)
        for kind, patterns in (("lds", _LDS_HOST_LINES), ("cds", _CDS_HOST_LINES)):
            if kind not in paths or not paths[kind].is_file():
                continue
            before = paths[kind].read_text(encoding="utf-8")
            after, n = _swap_hosts_in_lines(before, hosts, patterns)
            if n:
                what = "host_rewrite_literal of the Realtime routes" if kind == "lds" else \
                    "the realtime cluster's endpoint address"
                out.changes.append(FileChange(_rel(stack, paths[kind]), before, after,
                                              f"{what}: {_pairs(hosts)} ({n} line(s))"))
        if not out.changes:
            out.notes.append("the Envoy files do not name the Realtime host literally: set host_rewrite_literal "
                             f"on the Realtime routes to {', '.join(hosts.values())}")


def _pairs(hosts: Mapping[str, str]) -> str:
    return ", ".join(f"{a} -> {b}" for a, b in hosts.items())


def _aliases_patch(rt: Service, names: list[str]) -> dict[str, list[str]]:
    nets = [n for n in rt.networks] or ["default"]
    return {n: list(names) for n in nets}


def _needs_alias(rt: Service, host: str) -> bool:
    return host not in rt.dns_names


# ------------------------------------------------------------------ rename


def rename_files(stack: Stack, new: str) -> StackFiles:
    """The file changes that make the stack serve tenant ``new`` instead of the one it implies now.

    Raises:
        InputError: a bad tenant name, no Realtime service, or an unreadable gateway config.
    """
    validate_tenant(new)
    rt = _realtime(stack)
    old = implied_tenant(stack)
    out = StackFiles(old_tenant=old)
    if new == old:
        # The files are done (e.g. copied in before the rows were written): only the database part remains.
        out.notes.append(f"the stack's files already serve tenant {new!r}; only its rows are planned")
        return out
    up = realtime_upstream(stack)
    if up.error:
        raise InputError(f"the {up.kind} config cannot be read ({up.error}); fix what {up.kind}.parse reports first")
    named = [_host_only(h) for h in (*up.connect_hosts, *up.host_headers)]
    hosts = {h: swap_tenant(h, new) for h in dict.fromkeys(named) if tenant_of(h) == old}
    out.hosts = dict(hosts)
    if up.kind and not hosts:
        out.notes.append(f"the {up.kind} config sends no Host naming tenant {old!r}; nothing to change there")
    _gateway_host_changes(stack, up, hosts, out)
    patch: dict[str, Any] = {"environment": {"SELF_HOST_TENANT_NAME": new}}
    version = parse_version(rt.image)
    if not version.at_least(_TENANT_NAME_SINCE):
        out.notes.append(f"{version.describe()} ignores SELF_HOST_TENANT_NAME (read from v2.33.68): its seed keeps "
                         f"creating {old!r}; upgrade Realtime, or rely on the rows this plan writes")
    test = _raw_service(stack, rt.name, "healthcheck")
    if isinstance(test, Mapping) and "test" in test:
        swapped = _health_swap(_unwrap(test["test"]), old, new)
        if swapped != _unwrap(test["test"]):
            patch["healthcheck"] = {**{k: _unwrap(v) for k, v in test.items()}, "test": swapped}
    # The new host becomes a network alias: the old name keeps resolving until the gateway switched.
    connect = [hosts[_host_only(h)] for h in up.connect_hosts if _host_only(h) in hosts]
    aliases = [h for h in dict.fromkeys(connect) if _needs_alias(rt, h)]
    if aliases:
        patch["networks"] = _aliases_patch(rt, aliases)
    _override_changes(stack, rt, patch, f"tenant rename {old} -> {new}", out)
    # Some stacks derive every tenant place from .env variables (pgonrails: DEFAULT_TENANT, REALTIME_HOST); the
    # override wins over them for the realtime service, but the variables are the one place to change.
    named_by_env = sorted(k for k, v in stack.env.items() if v == old or v.startswith(old + "."))
    if named_by_env:
        out.notes.append(f".env names the tenant in {', '.join(named_by_env)}: changing those to {new!r} (and the "
                         f"host names built on it) is the simpler edit for this stack")
    return out


def _host_only(host: str) -> str:
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# ------------------------------------------------------------------ add / remove (multi-tenant)


def _begin(name: str) -> str:
    return f"# rtbook tenant {name}: begin"


def _end(name: str) -> str:
    return f"# rtbook tenant {name}: end"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _kong_service_blocks(lines: list[str]) -> list[tuple[str, int, int]]:
    """(service name, first line, end line exclusive) of each entry of the top-level ``services:`` list."""
    start = next((i for i, line in enumerate(lines) if re.match(r"^services:\s*$", line)), None)
    if start is None:
        return []
    blocks: list[tuple[str, int, int]] = []
    item_indent: int | None = None
    current: tuple[str, int] | None = None
    i = start + 1
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
            continue
        ind = _indent(line)
        if item_indent is None and stripped.startswith("- "):
            item_indent = ind
        if item_indent is not None and (ind < item_indent or (ind == item_indent and (
                stripped.startswith(("- ", "#")))) or (ind == 0 and not stripped.startswith("#"))):
            if current is not None:
                blocks.append((current[0], current[1], _trim(lines, current[1], i)))
                current = None
            if ind < item_indent and not stripped.startswith("#"):
                break
            m = re.match(r"^-\s+name:\s*['\"]?([^'\"\s]+)", stripped)
            if m and ind == item_indent:
                current = (m.group(1), i)
        i += 1
    if current is not None:
        blocks.append((current[0], current[1], _trim(lines, current[1], i)))
    return blocks


def _trim(lines: list[str], first: int, end: int) -> int:
    while end > first + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def _public_host_ok(host: str) -> str:
    if not _HOST.match(host) or ".." in host:
        raise InputError(f"--public-host {host!r} is not a host name; give the name clients use, e.g. "
                         "tenant-b.example.com")
    return host.lower()


def add_files(stack: Stack, name: str, public_host: str) -> StackFiles:
    """Gateway routing and a network alias so that requests for ``public_host`` reach Realtime as tenant ``name``.

    Raises:
        InputError: a bad name or host, no Realtime service, or an unreadable gateway config.
    """
    validate_tenant(name)
    public_host = _public_host_ok(public_host)
    rt = _realtime(stack)
    default = implied_tenant(stack)
    out = StackFiles(old_tenant=default)
    if name == default:
        out.blocked = f"{name!r} is the tenant the stack already serves (its default routes reach it)"
        return out
    up = realtime_upstream(stack)
    if up.error:
        raise InputError(f"the {up.kind} config cannot be read ({up.error}); fix what {up.kind}.parse reports first")
    if not up.kind:
        out.blocked = "the stack has no gateway: clients reach the tenant by sending Host " + \
            f"{name}.<anything> to Realtime directly"
        return out
    base_host = next((_host_only(h) for h in up.host_headers), None) or next(
        (_host_only(h) for h in up.connect_hosts), None)
    if base_host is None:
        out.blocked = f"the {up.kind} config has no Realtime route to copy"
        return out
    new_host = swap_tenant(base_host, name)
    out.hosts = {base_host: new_host}
    if up.kind == "kong":
        _kong_add(stack, name, public_host, out)
    else:
        _envoy_add(stack, name, public_host, base_host, new_host, out)
    if out.blocked:
        return out
    if _needs_alias(rt, new_host):
        _override_changes(stack, rt, {"networks": _aliases_patch(rt, [new_host])}, f"tenant add {name}", out)
    return out


def _kong_add(stack: Stack, name: str, public_host: str, out: StackFiles) -> None:
    path = _kong_path(stack)
    before = path.read_text(encoding="utf-8")
    if _begin(name) in before:
        out.blocked = f"{_rel(stack, path)} already has rtbook's routes for tenant {name!r}"
        return
    kong = load_kong(stack)
    if kong is None:
        raise InputError(f"{_rel(stack, path)}: cannot read kong.yml")
    wanted = {r.service for r in kong.realtime_routes() if r.service}
    if any(r.expression for r in kong.realtime_routes()):
        out.notes.append("a Realtime route uses an expression; it is copied without a hosts match")
    lines = before.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    blocks = [b for b in _kong_service_blocks(lines) if b[0] in wanted]
    if not blocks:
        out.blocked = f"{_rel(stack, path)}: no Realtime service entries found to copy"
        return
    hosts = out.hosts
    copied: list[str] = []
    indent = " " * _indent(lines[blocks[0][1]])
    copied.append(f"{indent}{_begin(name)} (public host {public_host}; remove with: rtbook tenant remove {name})\n")
    for _svc, first, end in blocks:
        block = lines[first:end]
        text, _ = _swap_hosts_in_lines("".join(block), hosts, _KONG_HOST_LINES)
        section = ""
        for n, line in enumerate(text.splitlines(keepends=True)):
            sec = re.match(r"^\s*([A-Za-z_]+):\s*$", line)
            if sec:
                section = sec.group(1)
            m = re.match(r"^(\s*(?:-\s+)?)name:\s*['\"]?([^'\"\s]+)['\"]?\s*$", line)
            # Service and route names must stay unique; plugin names are plugin types and stay as they are.
            if m and (n == 0 or section == "routes"):
                line = f"{m.group(1)}name: {m.group(2)}-{name}\n"
            p = re.match(r"^(\s*)paths:\s*$", line)
            if p:
                copied.append(f"{p.group(1)}hosts:\n{p.group(1)}  - {public_host}\n")
            copied.append(line)
    copied.append(f"{indent}{_end(name)}\n")
    last_end = max(end for _, _, end in blocks)
    after = "".join(lines[:last_end] + copied + lines[last_end:])
    out.changes.append(FileChange(_rel(stack, path), before, after,
                                  f"routes for Host {public_host} (Kong hosts match) to {hosts[next(iter(hosts))]}, "
                                  f"i.e. tenant {name!r}"))


def _envoy_add(stack: Stack, name: str, public_host: str, base_host: str, new_host: str, out: StackFiles) -> None:
    paths = _envoy_paths(stack)
    lds = paths.get("lds")
    if lds is None or not lds.is_file():
        out.blocked = "the Envoy lds file was not found"
        return
    before = lds.read_text(encoding="utf-8")
    if _begin(name) in before:
        out.blocked = f"{_rel(stack, lds)} already has rtbook's virtual host for tenant {name!r}"
        return
    lines = before.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((i for i, line in enumerate(lines) if re.match(r"^\s*virtual_hosts:\s*$", line)), None)
    first = None if start is None else next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("- ")), None)
    if first is None:
        out.blocked = f"{_rel(stack, lds)}: no virtual_hosts list to copy"
        return
    ind = _indent(lines[first])
    end = first + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > ind):
        end += 1
    end = _trim(lines, first, end)
    block = "".join(lines[first:end])
    block, n = _swap_hosts_in_lines(block, {base_host: new_host}, _LDS_HOST_LINES)
    if not n:
        out.blocked = f"{_rel(stack, lds)}: the first virtual host has no host_rewrite_literal {base_host} to copy"
        return
    body = block.splitlines(keepends=True)
    m = re.match(r"^(\s*-\s+)name:\s*['\"]?([^'\"\s]+)", body[0])
    if m is None:
        out.blocked = f"{_rel(stack, lds)}: the first virtual host does not start with '- name:'"
        return
    body[0] = f"{m.group(1)}name: {m.group(2)}_{name.replace('-', '_')}\n"
    # domains: the list right below; replace its items by the public host.
    d = next((i for i, line in enumerate(body) if re.match(r"^\s*domains:", line)), None)
    if d is None:
        out.blocked = f"{_rel(stack, lds)}: the first virtual host has no domains list"
        return
    dind = _indent(body[d])
    k = d + 1
    while k < len(body) and _indent(body[k]) > dind and body[k].lstrip().startswith("- "):
        k += 1
    pad = " " * (dind + 2)
    # Envoy compares the whole Host (with its port, if any) unless the listener strips ports, so list both.
    body[d:k] = [" " * dind + "domains:\n", f'{pad}- "{public_host}"\n', f'{pad}- "{public_host}:*"\n']
    copied = [" " * ind + _begin(name) + f" (public host {public_host})\n", *body, " " * ind + _end(name) + "\n"]
    after = "".join(lines[:end] + copied + lines[end:])
    out.changes.append(FileChange(_rel(stack, lds), before, after,
                                  f"a virtual host for {public_host} whose Realtime routes rewrite Host to "
                                  f"{new_host} (tenant {name!r})"))


def remove_files(stack: Stack, name: str) -> StackFiles:
    """Undo :func:`add_files`: drop rtbook's marked routes for ``name`` and its network alias."""
    validate_tenant(name)
    rt = _realtime(stack)
    default = implied_tenant(stack)
    out = StackFiles(old_tenant=default)
    if name == default:
        out.blocked = (f"{name!r} is the stack's own tenant (SELF_HOST_TENANT_NAME / the default routes); rename the "
                       "stack to another tenant first (rtbook tenant rename NEW)")
        return out
    kind = stack.gateway_kind()
    path: Path | None = None
    if kind == "kong":
        path = _kong_path(stack)
    elif kind == "envoy":
        path = _envoy_paths(stack).get("lds")
    if path is not None and path.is_file():
        before = path.read_text(encoding="utf-8")
        lines = before.splitlines(keepends=True)
        b = next((i for i, line in enumerate(lines) if line.strip().startswith(_begin(name))), None)
        e = next((i for i, line in enumerate(lines) if line.strip() == _end(name)), None)
        if b is not None and e is not None and e > b:
            after = "".join(lines[:b] + lines[e + 1:])
            out.changes.append(FileChange(_rel(stack, path), before, after,
                                          f"rtbook's routes for tenant {name!r} removed"))
        else:
            out.notes.append(f"{_rel(stack, path)} has no routes rtbook added for tenant {name!r}; routes written by "
                             "hand are left alone")
    alias = [a for names in rt.networks.values() for a in names if tenant_of(a) == name]
    if alias:
        _override_changes(stack, rt, {}, f"tenant remove {name}", out, remove_aliases=tuple(alias))
    return out
