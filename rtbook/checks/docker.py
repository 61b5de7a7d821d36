"""Container checks (``docker.*``): what actually runs, read through the Docker Engine API.

The files say what *should* run; a deployment tool, a forgotten override or a stale container can
make the live stack differ. These checks find the stack's containers (compose labels first, then
the container names from the compose file, then the image), and compare what they see with the
files and with what Realtime needs: the container is up and healthy, its environment is the one
the compose file gives, the gateway can resolve the upstream host whose first label is the
tenant, the logs carry no known failure signature, and the open-files and memory limits fit.

Where the fix is a compose change, the result carries the YAML to put in
``docker-compose.override.yml`` (``remedy`` and ``evidence["override_yaml"]``); rtbook never
edits the user's files.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from rtbook.clients.docker import (
    COMPOSE_NETWORK_LABEL,
    FD_BASELINE,
    MEM_BASELINE,
    MEM_PER_USER,
    ContainerInfo,
    Discovery,
    EngineSession,
    ExecOutcome,
    HealthProbe,
    _reload,
    docker_session,
    exec_in,
    parse_env_list,
    read_open_files,
)
from rtbook.config.gateway import realtime_upstream
from rtbook.config.images import image_tag
from rtbook.registry import register
from rtbook.remedies import diagnose
from rtbook.results import CheckResult, Status
from rtbook.secrets import REDACTED, is_secret_name
from rtbook.target import DEFAULT_TENANT, Target
from rtbook.tokens import verify_jwt

__all__ = [
    "HIDDEN_BY_DEFAULT",
    "LOG_SIGNATURES",
    "LogFinding",
    "LogLine",
    "LogSignature",
    "Upstream",
    "gateway_upstream",
    "override_yaml",
    "parse_log_line",
    "parse_resolver_output",
    "probe_http_status",
    "scan_logs",
    "token_verdict",
]

DEFAULT_OVERRIDE_FILE = "docker-compose.override.yml"
LOG_TAIL_LINES = 2000

# Env vars whose drift between the compose file and the container breaks Realtime outright;
# any other difference is a warning.
CRITICAL_ENV = frozenset(
    {
        "API_JWT_SECRET",
        "API_JWT_JWKS",
        "DB_HOST",
        "DB_PORT",
        "DB_NAME",
        "DB_USER",
        "DB_PASSWORD",
        "DB_ENC_KEY",
        "DB_AFTER_CONNECT_QUERY",
        "PORT",
        "SECRET_KEY_BASE",
        "METRICS_JWT_SECRET",
        "SELF_HOST_TENANT_NAME",
        "SEED_SELF_HOST",
        "APP_NAME",
    }
)


def override_yaml(service: str, spec: Mapping[str, Any], file: str = DEFAULT_OVERRIDE_FILE) -> str:
    """The YAML to put in ``docker-compose.override.yml`` to set ``spec`` on ``service``."""
    body = yaml.safe_dump({"services": {service: dict(spec)}}, sort_keys=False, default_flow_style=False)
    return f"# {file}\n{body.rstrip()}"


def _env_ref(value: str, name: str, target: Target) -> str:
    """How to write ``value`` in YAML: a ``${VAR}`` reference to the .env entry holding it when it is secret."""
    stack = target.stack
    env: Mapping[str, Any] = getattr(stack, "env", {}) if stack is not None else {}
    if is_secret_name(name) or len(value) >= 24:
        holders = [str(k) for k, v in env.items() if isinstance(v, str) and v == value]
        # Prefer the conventional source (API_JWT_SECRET <- JWT_SECRET, DB_ENC_KEY <- REALTIME_DB_ENC_KEY).
        for preferred in (name, name.removeprefix("API_"), name.removeprefix("METRICS_"), f"REALTIME_{name}"):
            if preferred in holders:
                return "${" + preferred + "}"
        if holders:
            return "${" + holders[0] + "}"
        if is_secret_name(name):
            return f"<the {name} value from docker-compose.yml>"
    return value


def _show(name: str, value: str) -> str:
    return REDACTED if is_secret_name(name) and value else repr(value)


def _no_session_result(check_id: str, session: EngineSession, target: Target) -> CheckResult | None:
    """A skip pointing at docker.engine when the engine is unusable; None to go on."""
    if session.problem is not None:
        # docker.engine carries the failure (when Docker is required); the others only point to it.
        return CheckResult(
            check_id,
            Status.SKIP,
            summary=f"Skipped: {session.problem.summary} (see docker.engine).",
            see_also=("docker.engine",),
        )
    return None


@dataclass(frozen=True)
class _Live:
    """The engine session and a freshly fetched Realtime container, for the checks that need both."""

    session: EngineSession
    disc: Discovery
    container: Any
    info: ContainerInfo


def _need_realtime(target: Target, check_id: str) -> _Live | CheckResult:
    """The running stack's Realtime container, or the skip that stands in for it."""
    session = docker_session(target)
    early = _no_session_result(check_id, session, target)
    if early is not None:
        return early
    disc = session.discovery
    assert disc is not None
    if disc.realtime is None:
        return CheckResult(
            check_id,
            Status.SKIP,
            summary="Skipped: no Realtime container was found (see docker.realtime.running).",
            see_also=("docker.realtime.running",),
        )
    loaded = _reload(session, disc.realtime)
    if loaded is None:
        return CheckResult(
            check_id,
            Status.SKIP,
            summary=f"Skipped: the container {disc.realtime.name} disappeared while checking.",
        )
    return _Live(session, disc, loaded[0], loaded[1])


def _tenant(info: ContainerInfo | None, target: Target) -> tuple[str, str]:
    """The tenant Realtime seeds (and the source saying so)."""
    if info is not None and info.env.get("SELF_HOST_TENANT_NAME"):
        return info.env["SELF_HOST_TENANT_NAME"], f"SELF_HOST_TENANT_NAME in container {info.name}"
    if target.tenant:
        return target.tenant, "the target's tenant parameter"
    return DEFAULT_TENANT, "Realtime's seed default (SELF_HOST_TENANT_NAME unset)"


# ------------------------------------------------------------------ docker.engine


@register("docker.engine", "Docker engine reachable and the stack's containers found", needs=("docker",))
def check_engine(target: Target, cid: str) -> CheckResult:
    """The engine answers and the stack's Realtime and gateway containers are found."""
    session = docker_session(target)
    if session.problem is not None:
        return CheckResult(
            cid,
            Status.FAIL if target.docker is True else Status.SKIP,
            summary=session.problem.summary
            + ("" if target.docker is True else " Docker checks skipped (pass --docker to require them)."),
            detail=session.problem.detail,
            remedy=session.problem.remedy,
            evidence={"docker_host": session.docker_host, "problem": session.problem.kind},
        )
    disc = session.discovery
    assert disc is not None
    evidence = {
        "docker_host": session.docker_host,
        "server_version": session.server_version,
        "project": disc.project,
        "realtime": disc.realtime.name if disc.realtime else None,
        "realtime_found_by": disc.realtime_how,
        "gateway": disc.gateway.name if disc.gateway else None,
        "gateway_found_by": disc.gateway_how,
        "gateway_kind": disc.gateway_kind,
        "db": disc.db.name if disc.db else None,
        "looked_for": dict(disc.looked_for),
        "containers_seen": list(disc.seen[:50]),
    }
    if not disc.anything:
        status = Status.FAIL if target.docker is True else Status.SKIP
        return CheckResult(
            cid,
            status,
            summary=f"The engine at {session.docker_host} answers, but no container of the stack runs on it.",
            detail="Looked for Realtime as " + disc.looked_for["realtime"] + "; for the gateway as "
            + disc.looked_for["gateway"] + f". Containers on this engine: {', '.join(disc.seen[:20]) or 'none'}.",
            remedy="Start the stack (docker compose up -d in the stack directory), or point DOCKER_HOST at the "
            "engine that runs it, or pass --no-docker.",
            evidence=evidence,
        )
    parts = []
    if disc.realtime:
        parts.append(f"Realtime is {disc.realtime.name} (found by {disc.realtime_how})")
    if disc.gateway:
        parts.append(f"the gateway is {disc.gateway.name} (found by {disc.gateway_how})")
    return CheckResult(
        cid,
        Status.PASS,
        summary=f"Engine {session.server_version} at {session.docker_host}: " + "; ".join(parts) + ".",
        evidence=evidence,
    )


# ------------------------------------------------------------------ docker.realtime.running


@register("docker.realtime.running", "Realtime container running, not restarting, not OOM-killed", needs=("docker",))
def check_running(target: Target, cid: str) -> CheckResult:
    """State, restart count, OOM kill and the exit code of the last run."""
    session = docker_session(target)
    early = _no_session_result(cid, session, target)
    if early is not None:
        return early
    disc = session.discovery
    assert disc is not None
    if disc.realtime is None:
        status = Status.FAIL if (disc.anything or target.docker is True) else Status.SKIP
        service = disc.realtime_service
        return CheckResult(
            cid,
            status,
            summary="No Realtime container found"
            + ("" if status is Status.FAIL else " (the stack does not run on this engine)")
            + ".",
            detail=("Looked for " + disc.looked_for.get("realtime", "") + ". "
                    + (f"Other containers of the stack run: {', '.join(c.name for c in (disc.gateway, disc.db) if c)}."
                       if disc.anything else "")).strip(),
            remedy=f"Start it: docker compose up -d {service}; if it was removed or renamed by a deployment "
            f"tool, make sure the compose service is called {service!r} or pass the stack that deployed it.",
            evidence={"looked_for": dict(disc.looked_for)},
        )
    loaded = _reload(session, disc.realtime)
    if loaded is None:
        return CheckResult(cid, Status.FAIL, summary=f"The container {disc.realtime.name} disappeared while checking.",
                           remedy=f"docker compose up -d {disc.realtime_service}")
    _, info = loaded
    st = info.state
    evidence: dict[str, Any] = {
        "container": info.name,
        "image": info.image,
        "status": st.status,
        "restart_count": info.restart_count,
        "restart_policy": info.restart_policy,
        "oom_killed": st.oom_killed,
        "exit_code": st.exit_code,
        "error": st.error,
        "started_at": st.started_at,
        "finished_at": st.finished_at,
    }
    where = f"container {info.name} (image {info.image})"
    logs_hint = f"Read docker.realtime.logs (or docker logs --tail 100 {info.name}) for the crash reason."
    if st.oom_killed:
        spec = {"mem_limit": "1g"}
        patch = override_yaml(disc.realtime_service, spec)
        evidence["override_yaml"] = patch
        return CheckResult(
            cid, Status.FAIL,
            summary=f"Realtime was killed for running out of memory (OOMKilled) in {where}.",
            detail=f"State.OOMKilled=true, memory limit {_fmt_bytes(info.memory_limit)}, "
            f"restarts {info.restart_count}, last exit code {st.exit_code}.",
            remedy="Give Realtime more memory (or lower the tenant's max_concurrent_users):\n" + patch,
            evidence=evidence,
        )
    if st.restarting or (not st.running and info.restart_count > 0 and st.status in ("restarting", "exited")):
        return CheckResult(
            cid, Status.FAIL,
            summary=f"Realtime is in a restart loop: {info.restart_count} restarts, last exit code {st.exit_code}.",
            detail=f"{where}: State.Status={st.status}, Restarting={st.restarting}, RestartCount={info.restart_count}, "
            f"restart policy {info.restart_policy or 'no'}, last run exited with {st.exit_code}"
            + (f" ({st.error})" if st.error else "") + f" at {st.finished_at}. "
            "Realtime crashes at boot when a required variable is missing or invalid (realtime-facts 7.3).",
            remedy=logs_hint + " Fix the variable it names, then docker compose up -d "
            f"--force-recreate {disc.realtime_service}.",
            evidence=evidence, see_also=("docker.realtime.logs", "docker.realtime.env"),
        )
    if not st.running:
        return CheckResult(
            cid, Status.FAIL,
            summary=f"Realtime is not running: {where} is {st.status or 'unknown'} (exit code {st.exit_code}).",
            detail=f"State.Status={st.status}, exit code {st.exit_code}"
            + (f", error {st.error!r}" if st.error else "") + f", finished at {st.finished_at}."
            + (" Exit code 137 is SIGKILL: the kernel's OOM killer (memory limit too low) or a forced stop."
               if st.exit_code == 137 else ""),
            remedy=f"{logs_hint} Then start it: docker compose up -d {disc.realtime_service}.",
            evidence=evidence, see_also=("docker.realtime.logs",),
        )
    since_restart = _age_s(st.finished_at, _engine_now(session))
    evidence["seconds_since_last_exit"] = round(since_restart, 1) if since_restart is not None else None
    if info.restart_count > 0 and since_restart is not None and since_restart < RESTART_LOOP_WINDOW_S:
        # Caught between two crashes: the container is up, but its previous run ended moments ago.
        return CheckResult(
            cid, Status.FAIL,
            summary=f"Realtime is in a restart loop: {info.restart_count} restarts, the last one "
            f"{since_restart:.0f} s ago.",
            detail=f"{where} is up since {st.started_at}, but its previous run ended at {st.finished_at} and "
            f"RestartCount={info.restart_count} (restart policy {info.restart_policy or 'no'}). Realtime crashes "
            "at boot when a required variable is missing or invalid (realtime-facts 7.3).",
            remedy=logs_hint + " Fix the variable it names, then docker compose up -d "
            f"--force-recreate {disc.realtime_service}.",
            evidence=evidence, see_also=("docker.realtime.logs", "docker.realtime.env"),
        )
    if info.restart_count > 0:
        return CheckResult(
            cid, Status.WARN,
            summary=f"Realtime runs, but has restarted {info.restart_count} times.",
            detail=f"{where} is running since {st.started_at}; RestartCount={info.restart_count}. Each restart "
            "drops every WebSocket; repeated restarts point at a crash or the healthcheck killing it.",
            remedy=logs_hint,
            evidence=evidence, see_also=("docker.realtime.logs",),
        )
    file_tag = image_tag(str(getattr(target.stack.realtime_service(), "image", "") or "")) if target.stack else ""
    live_tag = image_tag(info.image)
    evidence["compose_image_tag"] = file_tag
    if file_tag and live_tag and file_tag != live_tag:
        return CheckResult(
            cid, Status.WARN,
            summary=f"Realtime runs {live_tag}, but the compose file says {file_tag}.",
            detail=f"{where} was created from {info.image}; the Realtime service's image in the compose files "
            f"is tagged {file_tag}. Checks on the files (version-dependent rules) describe {file_tag}, not what "
            "runs.",
            remedy=f"docker compose pull {disc.realtime_service} && docker compose up -d {disc.realtime_service} "
            "(or pin the running tag in the compose file if it is the one you want).",
            evidence=evidence,
        )
    return CheckResult(
        cid, Status.PASS,
        summary=f"Realtime runs ({info.name}, {info.image}), no restarts, not OOM-killed.",
        evidence=evidence,
    )


RESTART_LOOP_WINDOW_S = 300.0


def _parse_ts(value: str) -> float | None:
    """Seconds since the epoch for Docker's RFC 3339 timestamps (nanoseconds allowed)."""
    if not value or value.startswith("0001-"):
        return None
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", value)
    if not m:
        return None
    import datetime as dt

    frac = (m.group(2) or ".0")[:7]
    tz = m.group(3) or "Z"
    text = m.group(1) + frac + ("+00:00" if tz == "Z" else tz)
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _engine_now(session: EngineSession) -> float:
    """The engine's clock (a remote engine's may differ from ours), else ours."""
    try:
        now = _parse_ts(str(session.client.info().get("SystemTime", "")))
    except Exception:
        now = None
    return now if now is not None else time.time()


def _age_s(value: str, now: float) -> float | None:
    ts = _parse_ts(value)
    return None if ts is None else max(0.0, now - ts)


def _fmt_bytes(n: int) -> str:
    if n <= 0:
        return "unlimited"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} B"


# ------------------------------------------------------------------ docker.realtime.health

_STATUS_PATTERNS = (
    re.compile(r"returned error:?\s*(?:HTTP/[\d.]+\s+)?(\d{3})"),
    re.compile(r"HTTP/[\d.]+\s+(\d{3})"),
    re.compile(r"\b(?:status|code)[ =:]+(\d{3})\b", re.I),
)
_HEALTH_TENANT = re.compile(r"/api/tenants/([^/\s\"']+)/health")
_BEARER = re.compile(r"Bearer\s+([A-Za-z0-9._\-${}]+)")


def probe_http_status(output: str) -> int | None:
    """The HTTP status a healthcheck probe reported (curl -f, wget and similar), if any."""
    for pattern in _STATUS_PATTERNS:
        m = pattern.search(output)
        if m:
            return int(m.group(1))
    return None


def token_verdict(command: str, secret: str | None) -> str:
    """Whether the Bearer token in the healthcheck verifies with API_JWT_SECRET (a sentence, or '')."""
    m = _BEARER.search(command)
    if not m:
        return ""
    token = m.group(1)
    if token.startswith("$"):
        return "the healthcheck's token is an unexpanded variable (" + token + "); the shell inside the container " \
            "must have it set, or compose must interpolate it"
    if not secret:
        return ""
    with warnings.catch_warnings():
        # A short secret is reported by the env rules; here only the signature matters.
        warnings.simplefilter("ignore")
        claims, verdict = verify_jwt(token, secret)
    if verdict == "bad signature":
        return "the healthcheck's Bearer token (ANON_KEY) is NOT signed with the container's API_JWT_SECRET"
    if verdict != "ok":
        return f"the healthcheck's Bearer token cannot be verified: {verdict}"
    exp = (claims or {}).get("exp")
    if isinstance(exp, int | float) and exp < time.time():
        return "the healthcheck's token verifies with API_JWT_SECRET but has expired"
    return "the healthcheck's Bearer token verifies with the container's API_JWT_SECRET"


@register("docker.realtime.health", "Realtime healthcheck healthy", needs=("docker",), using=_need_realtime)
def check_health(target: Target, cid: str, got: _Live) -> CheckResult:
    """Health status and the output of the last probes, with the known meaning of 403 and 404."""
    disc, info = got.disc, got.info
    service = disc.realtime_service
    hc = info.healthcheck
    command = hc.command if hc else ""
    tenant, tenant_source = _tenant(info, target)
    official = (
        'curl -sSfL --head -o /dev/null -H "Authorization: Bearer ${ANON_KEY}" '
        f"http://localhost:4000/api/tenants/{tenant}/health"
    )
    health = info.state.health
    evidence: dict[str, Any] = {
        "container": info.name,
        "healthcheck": command,
        "status": health.status if health else None,
        "failing_streak": health.failing_streak if health else 0,
        "probes": [
            {"start": p.start, "exit_code": p.exit_code, "output": p.output.strip()[-500:]}
            for p in (health.log[-5:] if health else ())
        ],
    }
    if health is None or hc is None or hc.disabled:
        spec = {"healthcheck": {"test": ["CMD-SHELL", official], "interval": "30s", "timeout": "5s",
                                "retries": 3, "start_period": "10s"}}
        patch = override_yaml(service, spec)
        evidence["override_yaml"] = patch
        return CheckResult(
            cid, Status.WARN,
            summary=f"The Realtime container {info.name} has no healthcheck.",
            detail="Without a healthcheck nothing waits for Realtime to be ready and 'docker ps' cannot show a "
            "broken tenant. The official compose file probes /api/tenants/<tenant>/health with the ANON_KEY.",
            remedy="Add the official healthcheck:\n" + patch,
            evidence=evidence,
        )
    if health.status == "healthy":
        last_ok = health.log[-1] if health.log else None
        return CheckResult(
            cid, Status.PASS,
            summary=f"{info.name} is healthy"
            + (f" (last probe exited 0 at {last_ok.end[:19]})." if last_ok and last_ok.end else "."),
            evidence=evidence,
        )
    last: HealthProbe | None = health.log[-1] if health.log else None
    if health.status == "starting" and not (last and last.exit_code != 0):
        return CheckResult(
            cid, Status.WARN,
            summary=f"{info.name} is still starting (no probe verdict yet).",
            detail="The healthcheck has not passed yet; run the checks again in a minute.",
            remedy="Wait for the start period to end, then run the checks again.",
            evidence=evidence,
        )
    outputs = " ".join(p.output for p in health.log[-3:])
    code = probe_http_status(outputs)
    path_tenant_m = _HEALTH_TENANT.search(command)
    path_tenant = path_tenant_m.group(1) if path_tenant_m else ""
    verdict = token_verdict(command, info.env.get("API_JWT_SECRET"))
    evidence["http_status"] = code
    evidence["healthcheck_tenant"] = path_tenant
    evidence["token"] = verdict
    detail = [
        f"State.Health.Status={health.status}, failing streak {health.failing_streak}; "
        f"last probe output: {(last.output.strip() if last else '')[-300:]!r}.",
        f"Healthcheck: {command}.",
    ]
    cause = ""
    if code == 403:
        cause = "admin_jwt_mismatch"
        detail.append(
            "403 on /api/tenants/<id>/health means the Bearer token was refused: it must be a JWT signed with "
            "Realtime's API_JWT_SECRET (realtime-facts 7, 10.4)" + (f"; {verdict}" if verdict else "") + "."
        )
        if verdict.endswith("verifies with the container's API_JWT_SECRET"):
            # The token is right, so the request itself is mangled or the token is refused by policy.
            remedy = (
                "The token is valid, so the probe does not send it as 'Authorization: Bearer <token>': under "
                "Podman the exec-form healthcheck is mangled (supabase/supabase#40326); use the CMD-SHELL form "
                "of the official compose file. Also check that API_TOKEN_BLOCKLIST does not list the token:\n"
                + override_yaml(service, {"healthcheck": {"test": ["CMD-SHELL", official]}})
            )
        else:
            remedy = (
                "Make API_JWT_SECRET equal the JWT_SECRET that signed ANON_KEY (in the compose file "
                "API_JWT_SECRET: ${JWT_SECRET}); if ANON_KEY was generated with another secret, regenerate "
                "ANON_KEY and SERVICE_ROLE_KEY from JWT_SECRET. "
                f"Then docker compose up -d --force-recreate {service}."
            )
    elif code == 404:
        cause = "tenant_missing_admin"
        detail.append(
            f"404 means the tenant {path_tenant or '?'} does not exist in _realtime.tenants (realtime-facts 10.5): "
            f"the seed did not run or failed, or it created another tenant (Realtime seeds {tenant}, from "
            f"{tenant_source})."
        )
        if path_tenant and path_tenant != tenant:
            spec = {"healthcheck": {"test": ["CMD-SHELL", official]}}
            patch = override_yaml(service, spec)
            evidence["override_yaml"] = patch
            remedy = f"The healthcheck asks for tenant {path_tenant!r} but Realtime seeds {tenant!r}; probe the " \
                "seeded tenant:\n" + patch
        else:
            remedy = (
                f"Make sure SEED_SELF_HOST is \"true\" and the seed can run (docker logs {info.name} | grep -i seed; "
                "the _realtime schema must exist: volumes/db/realtime.sql), or create the tenant through the "
                "admin API; see the tenant.* checks."
            )
    elif "connection refused" in outputs.lower() or "failed to connect" in outputs.lower():
        detail.append("Nothing listens on the probed port: Realtime has not started its HTTP endpoint, or PORT "
                      "differs from the port in the healthcheck.")
        remedy = f"Read docker.realtime.logs for the boot error; keep PORT (now {info.env.get('PORT', 'unset')}) " \
            "and the healthcheck URL's port equal."
    elif last is not None and ("not found" in last.output.lower() and last.exit_code in (126, 127)):
        detail.append("The healthcheck's program is not in the image.")
        remedy = "Use the official healthcheck (curl is in the supabase/realtime image):\n" + override_yaml(
            service, {"healthcheck": {"test": ["CMD-SHELL", official]}}
        )
    else:
        remedy = f"Run the probe by hand to see the full answer: docker exec {info.name} sh -c '<healthcheck>' " \
            "and read docker.realtime.logs."
    return CheckResult(
        cid, Status.FAIL,
        summary=f"{info.name} is {health.status}"
        + (f": the health probe got HTTP {code}" if code else "")
        + f" (failing streak {health.failing_streak}).",
        detail="\n".join(detail), remedy=remedy, evidence=evidence, cause=cause,
        see_also=("docker.realtime.env", "docker.realtime.logs"),
    )


# ------------------------------------------------------------------ docker.realtime.env


def _compose_str(value: Any) -> str:
    """The string compose passes to the container for a YAML value (booleans become true/false)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _image_env(session: EngineSession, info: ContainerInfo) -> dict[str, str]:
    from docker.errors import NotFound  # the Docker SDK only once a Docker check runs

    try:
        image = session.client.images.get(info.image_id or info.image)
    except NotFound:  # the image was removed after the container was created
        return {}
    return parse_env_list((image.attrs.get("Config") or {}).get("Env") or [])


def _evaluate_rules(env: Mapping[str, str], info: ContainerInfo, target: Target) -> tuple[list[CheckResult], str]:
    from rtbook.checks.compose import evaluate_realtime_env

    auth_env = getattr(target.stack, "env", None) if target.stack is not None else None
    try:
        results = evaluate_realtime_env(
            dict(env), image=info.image, auth_env=auth_env, source=f"container {info.name}"
        )
    except Exception as exc:  # a rule crash must not hide the diff
        return [], f"static rules crashed: {type(exc).__name__}: {exc}"
    return list(results), ""


@register("docker.realtime.env", "Realtime container environment matches the compose file and the rules",
          needs=("docker",), using=_need_realtime)
def check_env(target: Target, cid: str, got: _Live) -> CheckResult:
    """The static Realtime env rules on the live environment, and every difference from the compose file."""
    session, disc, info = got.session, got.disc, got.info
    service = disc.realtime_service
    live = dict(info.env)
    image_env = _image_env(session, info)
    expected: dict[str, str] = {}
    rt_service = target.stack.realtime_service() if target.stack is not None else None
    if rt_service is not None:
        expected = {str(k): _compose_str(v) for k, v in dict(rt_service.environment).items()}
    # Variables the image itself sets (PATH, LANG...) are not drift unless the compose file names them.
    live_app = {k: v for k, v in live.items() if k in expected or image_env.get(k) != v}

    rules, rules_note = _evaluate_rules(live, info, target)
    failed_rules = [r for r in rules if r.status in (Status.FAIL, Status.ERROR)]
    warned_rules = [r for r in rules if r.status is Status.WARN]

    differ = sorted(k for k in expected if k in live and live[k] != expected[k])
    missing = sorted(k for k in expected if k not in live)
    extra = sorted(k for k in live_app if k not in expected) if expected else []
    lines: list[str] = []
    for k in differ:
        lines.append(f"{k}: compose file gives {_show(k, expected[k])}, container has {_show(k, live[k])}")
    for k in missing:
        lines.append(f"{k}: compose file gives {_show(k, expected[k])}, container does not have it")
    for k in extra:
        lines.append(f"{k}: set in the container ({_show(k, live[k])}) but not in the compose file")
    critical = [k for k in (*differ, *missing) if k in CRITICAL_ENV]

    evidence: dict[str, Any] = {
        "container": info.name,
        "different": differ,
        "missing_in_container": missing,
        "only_in_container": extra,
        "rules": [{"id": r.id, "status": r.status.value, "summary": r.summary} for r in rules],
    }
    if rules_note:
        evidence["rules_note"] = rules_note
    remedies: list[str] = []
    if differ or missing:
        spec = {"environment": {k: _env_ref(expected[k], k, target) for k in (*differ, *missing)}}
        patch = override_yaml(service, spec)
        evidence["override_yaml"] = patch
        remedies.append(
            "The running container does not have the compose file's environment. If the compose file is right, "
            f"recreate the container (docker compose up -d --force-recreate {service}); if another file or a "
            "deployment tool overrides it, pin the compose-file values in the override file:\n" + patch
        )
    if extra:
        remedies.append(
            f"Remove {', '.join(extra)} where it is set (an env_file, another compose file or the deployment "
            "tool), or add it to the compose file so that the files describe what runs."
        )
    for r in failed_rules + warned_rules:
        if r.remedy:
            remedies.append(f"[{r.id}] {r.remedy}")
    if failed_rules or critical:
        status = Status.FAIL
    elif warned_rules or differ or missing or extra:
        status = Status.WARN
    else:
        status = Status.PASS
    if status is Status.PASS:
        summary = (
            f"{info.name}'s environment matches the compose file"
            + (f" and passes {len(rules)} Realtime rules." if rules else ".")
        )
        if not expected:
            summary = f"{info.name}'s environment passes {len(rules)} Realtime rules (no compose file to compare)."
    else:
        bits = []
        if critical:
            bits.append(f"{', '.join(critical)} differ{'s' if len(critical) == 1 else ''} from the compose file")
        other = len(differ) + len(missing) + len(extra) - len(critical)
        if other:
            bits.append(f"{other} other difference{'s' if other != 1 else ''} from the compose file")
        if failed_rules:
            bits.append(f"{len(failed_rules)} Realtime rule{'s' if len(failed_rules) != 1 else ''} failed")
        if warned_rules:
            bits.append(f"{len(warned_rules)} rule warning{'s' if len(warned_rules) != 1 else ''}")
        summary = f"{info.name}'s live environment: " + "; ".join(bits) + "."
    detail_parts = []
    if lines:
        detail_parts.append("Differences (secret values hidden):\n" + "\n".join(lines))
    for r in failed_rules + warned_rules:
        detail_parts.append(f"[{r.status.value}] {r.id}: {r.summary}")
    if rules_note:
        detail_parts.append(rules_note)
    return CheckResult(
        cid, status, summary=summary, detail="\n".join(detail_parts), remedy="\n".join(remedies),
        evidence=evidence, see_also=("compose.realtime",),
    )


# ------------------------------------------------------------------ upstream hosts


def _split_host(value: str) -> str:
    host = value
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True)
class Upstream:
    """Where the gateway sends Realtime traffic.

    Attributes:
        hosts: the names the gateway connects to (they must resolve to Realtime).
        host_headers: the Host values Realtime receives (their first label is the tenant); empty
            when the gateway forwards the client's Host.
        source: which file or fallback the names come from.
    """

    hosts: tuple[str, ...]
    host_headers: tuple[str, ...]
    source: str


def gateway_upstream(target: Target, kind: str) -> Upstream:
    """The gateway's Realtime upstream, read from the stack's Kong or Envoy config."""
    stack = target.stack
    if stack is None:
        return Upstream((), (), "no stack files to read the gateway's upstream from")
    up = realtime_upstream(stack)
    source = up.source
    if up.error:  # a broken gateway config is reported by kong.parse / envoy.parse
        source = f"the gateway config cannot be read ({up.error}; see {kind or 'kong'}.parse)"
    out = tuple(dict.fromkeys(_split_host(h) for h in up.connect_hosts))
    if out:
        # realtime_upstream says which Host Realtime sees (a Kong Host replacement or preserve_host included).
        head = tuple(dict.fromkeys(_split_host(h) for h in up.host_headers))
        return Upstream(out, head, source)
    rt = stack.realtime_service()
    cname = getattr(rt, "container_name", "") if rt is not None else ""
    if cname:
        fallback = (source + "; " if source else "") + "the Realtime service's container_name"
        return Upstream((str(cname),), (str(cname),), fallback)
    return Upstream((), (), source or "the gateway config names no Realtime upstream")


def _dns_cause(kind: str) -> str:
    return "kong_upstream_dns" if kind == "kong" else ""


def _compose_networks(session: EngineSession, networks: Iterable[str]) -> list[str]:
    """The compose names of ``networks`` (what an override file calls them), without repeats."""
    return list(dict.fromkeys(_compose_network_name(session, n) for n in networks))


def _compose_network_name(session: EngineSession, network: str) -> str:
    from docker.errors import NotFound  # the Docker SDK only once a Docker check runs

    try:
        net = session.client.networks.get(network)
        label = (net.attrs.get("Labels") or {}).get(COMPOSE_NETWORK_LABEL)
    except NotFound:
        label = None
    return str(label) if label else ("default" if network.endswith("_default") else network)


@register("docker.realtime.tenant_host", "Gateway upstream host resolves to Realtime and names the tenant",
          needs=("docker",), using=_need_realtime)
def check_tenant_host(target: Target, cid: str, got: _Live) -> CheckResult:
    """The container name and aliases make the upstream host resolvable; its first label is the tenant."""
    session, disc, info = got.session, got.disc, got.info
    service = disc.realtime_service
    upstream = gateway_upstream(target, disc.gateway_kind)
    hosts, source = list(upstream.hosts), upstream.source
    tenant, tenant_source = _tenant(info, target)
    gateway = disc.gateway
    if gateway is not None:
        fresh = _reload(session, gateway)
        gateway = fresh[1] if fresh is not None else gateway
    shared = sorted(set(info.networks) & set(gateway.networks)) if gateway is not None else sorted(info.networks)
    names_by_net = {n: sorted(info.dns_names(n)) for n in (shared or sorted(info.networks))}
    reachable_names: set[str] = set()
    for n in shared:
        reachable_names |= info.dns_names(n)
    evidence: dict[str, Any] = {
        "container": info.name,
        "upstream_hosts": hosts,
        "upstream_source": source,
        "tenant": tenant,
        "tenant_source": tenant_source,
        "names_by_network": names_by_net,
        "shared_networks": shared,
        "gateway": gateway.name if gateway else None,
    }
    if not hosts:
        return CheckResult(
            cid, Status.WARN,
            summary="Cannot tell which host the gateway uses for Realtime.",
            detail=f"{source}. Realtime {info.name} answers to {', '.join(sorted(info.all_dns_names()))}.",
            remedy="Pass the stack directory (--stack) so that the gateway's config can be read.",
            evidence=evidence,
        )
    problems: list[str] = []
    remedy_parts: list[str] = []
    bad_hosts = [h for h in hosts if h not in (reachable_names if gateway is not None else info.all_dns_names())]
    wrong_tenant = [h for h in upstream.host_headers if h.split(".", 1)[0] != tenant]
    evidence["host_headers"] = list(upstream.host_headers)
    if gateway is not None and not shared:
        problems.append(
            f"the gateway {gateway.name} ({', '.join(gateway.networks) or 'no network'}) and Realtime {info.name} "
            f"({', '.join(info.networks) or 'no network'}) share no network, so no name of Realtime resolves there"
        )
    if bad_hosts:
        problems.append(
            f"{source} names {', '.join(bad_hosts)}, but {info.name} answers only to "
            + "; ".join(f"{', '.join(v) or 'nothing'} on {k}" for k, v in names_by_net.items())
        )
        nets = shared or list(info.networks) or ["default"]
        compose_nets = _compose_networks(session, nets)
        if gateway is not None and not shared and gateway.networks:
            compose_nets = _compose_networks(session, gateway.networks)
        alias_spec = {"networks": {n: {"aliases": list(bad_hosts)} for n in compose_nets}}
        patch = override_yaml(service, alias_spec)
        name_patch = override_yaml(service, {"container_name": bad_hosts[0]})
        evidence["override_yaml"] = patch
        evidence["override_yaml_container_name"] = name_patch
        remedy_parts.append(
            f"Give Realtime the name the gateway uses. As a network alias (works even when a deployment tool "
            f"renames containers):\n{patch}\nor restore the container name:\n{name_patch}"
        )
    elif gateway is not None and not shared:
        compose_nets = _compose_networks(session, gateway.networks)
        patch = override_yaml(service, {"networks": compose_nets})
        evidence["override_yaml"] = patch
        remedy_parts.append("Put Realtime on the gateway's network:\n" + patch)
    if wrong_tenant:
        labels = ", ".join(f"{h} (tenant {h.split('.', 1)[0]!r})" for h in wrong_tenant)
        problems.append(
            f"the gateway sends Host {labels} but the tenant Realtime has is {tenant!r} ({tenant_source}); "
            "Realtime takes the tenant from the first label of the Host header (realtime-facts 1.1)"
        )
        first = wrong_tenant[0].split(".", 1)[0]
        patch = override_yaml(service, {"environment": {"SELF_HOST_TENANT_NAME": first}})
        evidence.setdefault("override_yaml", patch)
        evidence["override_yaml_tenant"] = patch
        remedy_parts.append(
            f"Either make the upstream host start with {tenant}. (e.g. {tenant}.supabase-realtime, in the gateway "
            f"config and as Realtime's alias), or seed the tenant the host implies:\n{patch}"
        )
    if problems:
        return CheckResult(
            cid, Status.FAIL,
            summary=f"The gateway's Realtime upstream {', '.join(hosts)} "
            + ("does not reach" if bad_hosts or (gateway is not None and not shared) else "does not name the tenant of")
            + f" {info.name}.",
            detail="; ".join(problems) + ".",
            remedy="\n".join(remedy_parts),
            evidence=evidence, cause="tenant_not_found" if wrong_tenant else _dns_cause(disc.gateway_kind),
            see_also=("docker.gateway.resolves_realtime",),
        )
    if upstream.host_headers:
        tenant_note = f"the Host it sends ({', '.join(upstream.host_headers)}) names the tenant {tenant!r}"
    else:
        tenant_note = "the gateway forwards the client's Host, so the client's Host chooses the tenant " \
            f"(see {'kong.realtime_preserve_host' if disc.gateway_kind == 'kong' else 'envoy.realtime_host_rewrite'})"
    return CheckResult(
        cid, Status.PASS,
        summary=f"{', '.join(hosts)} is a name of {info.name} on {', '.join(shared or list(info.networks))}"
        f" and {tenant_note}.",
        evidence=evidence,
    )


# ------------------------------------------------------------------ docker.gateway.resolves_realtime


def parse_resolver_output(tool: str, output: str) -> list[str]:
    """The addresses ``getent hosts`` or ``nslookup`` printed for the looked-up name."""
    addrs: list[str] = []
    if tool == "getent":
        for line in output.splitlines():
            parts = line.split()
            if parts and (":" in parts[0] or parts[0].replace(".", "").isdigit()):
                addrs.append(parts[0])
        return addrs
    seen_name = False
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.lower().startswith("name:"):
            seen_name = True
            continue
        if seen_name and stripped.lower().startswith("address"):
            value = stripped.split(":", 1)[1].strip() if ":" in stripped else ""
            value = value.split()[0] if value else ""
            if value:
                addrs.append(value)
    return list(dict.fromkeys(addrs))


_RESOLVERS = (
    ("getent", ("getent", "hosts")),
    ("nslookup", ("nslookup",)),
    ("nslookup", ("busybox", "nslookup")),
)


def _resolve_in(container: Any, host: str) -> tuple[str, ExecOutcome | None, list[str], list[str]]:
    """Resolve ``host`` inside ``container`` with the first resolver the image has."""
    tried: list[str] = []
    for tool, base in _RESOLVERS:
        outcome = exec_in(container, (*base, host))
        tried.append(" ".join(base))
        if outcome.error:
            return tool, outcome, [], tried
        if outcome.missing:
            continue
        return tool, outcome, parse_resolver_output(tool, outcome.output), tried
    return "", None, [], tried


@register("docker.gateway.resolves_realtime", "The gateway container resolves Realtime's upstream host",
          needs=("docker",), using=_need_realtime)
def check_gateway_resolves(target: Target, cid: str, got: _Live) -> CheckResult:
    """From inside the gateway container, the upstream host resolves to Realtime; both share a network."""
    session, disc, info = got.session, got.disc, got.info
    if disc.gateway is None:
        return CheckResult(
            cid, Status.SKIP,
            summary="Skipped: no gateway container (Kong or Envoy) was found.",
            detail="Looked for " + disc.looked_for.get("gateway", "") + ".",
            evidence={"looked_for": dict(disc.looked_for)},
        )
    if not info.state.running or info.state.restarting:
        return CheckResult(
            cid, Status.SKIP,
            summary=f"Skipped: Realtime ({info.name}) is {info.state.status}, so no name of it resolves now "
            "(see docker.realtime.running).",
            see_also=("docker.realtime.running",),
        )
    loaded = _reload(session, disc.gateway)
    if loaded is None:
        return CheckResult(cid, Status.SKIP, summary=f"Skipped: {disc.gateway.name} disappeared while checking.")
    gw_container, gw = loaded
    upstream = gateway_upstream(target, disc.gateway_kind)
    hosts, source = list(upstream.hosts), upstream.source
    if not hosts:
        hosts = [info.name]
        source = "the Realtime container's name (no gateway config to read)"
    shared = sorted(set(info.networks) & set(gw.networks))
    rt_ips = {ep.ip_address for ep in info.networks.values() if ep.ip_address}
    evidence: dict[str, Any] = {
        "gateway": gw.name,
        "realtime": info.name,
        "hosts": hosts,
        "host_source": source,
        "gateway_networks": sorted(gw.networks),
        "realtime_networks": sorted(info.networks),
        "shared_networks": shared,
        "realtime_ips": sorted(rt_ips),
    }
    if not gw.state.running:
        return CheckResult(
            cid, Status.FAIL,
            summary=f"The gateway container {gw.name} is not running ({gw.state.status}).",
            detail=f"State.Status={gw.state.status}, exit code {gw.state.exit_code}.",
            remedy=f"docker logs {gw.name}; then docker compose up -d {disc.gateway_service}",
            evidence=evidence,
        )
    problems: list[str] = []
    remedy: list[str] = []
    if not shared:
        compose_nets = _compose_networks(session, gw.networks) or ["default"]
        patch = override_yaml(disc.realtime_service, {"networks": compose_nets})
        evidence["override_yaml"] = patch
        problems.append(
            f"{gw.name} is on {', '.join(sorted(gw.networks)) or 'no network'} and {info.name} on "
            f"{', '.join(sorted(info.networks)) or 'no network'}: they share no network"
        )
        remedy.append("Put Realtime on the gateway's network (and keep it on its own for the database):\n" + patch)
    results: dict[str, Any] = {}
    tool_used = ""
    for host in hosts:
        tool, outcome, addrs, tried = _resolve_in(gw_container, host)
        tool_used = tool_used or tool
        if outcome is None:
            results[host] = {"tool": None, "tried": tried}
            continue
        results[host] = {
            "tool": " ".join(outcome.command[:-1]), "exit_code": outcome.exit_code, "addresses": addrs,
            "output": outcome.output.strip()[-400:], "error": outcome.error,
        }
        if outcome.error:
            problems.append(f"exec in {gw.name} failed: {outcome.error}")
        elif not addrs:
            problems.append(f"{host} does not resolve inside {gw.name} ({' '.join(outcome.command)} exited "
                            f"{outcome.exit_code})")
        elif rt_ips and not set(addrs) & rt_ips:
            problems.append(f"{host} resolves to {', '.join(addrs)} inside {gw.name}, which is not {info.name} "
                            f"({', '.join(sorted(rt_ips))}): another container holds that name")
    evidence["resolution"] = results
    unresolved = [h for h, r in results.items() if r.get("tool") and not r.get("addresses")]
    if unresolved and shared:
        patch = override_yaml(disc.realtime_service, {"networks": {
            _compose_network_name(session, shared[0]): {"aliases": unresolved}}})
        evidence.setdefault("override_yaml", patch)
        remedy.append("Add the upstream host as Realtime's network alias:\n" + patch)
    if problems:
        return CheckResult(
            cid, Status.FAIL,
            summary=f"{gw.name} cannot reach Realtime by {', '.join(hosts)}.",
            detail="; ".join(problems) + f". Host(s) from {source}.",
            remedy="\n".join(remedy) or "See docker.realtime.tenant_host.",
            evidence=evidence, see_also=("docker.realtime.tenant_host",), cause=_dns_cause(disc.gateway_kind),
        )
    if not tool_used:
        return CheckResult(
            cid, Status.WARN,
            summary=f"{gw.name} has no resolver tool (getent, nslookup); resolution was not tested from inside.",
            detail=f"Tried {', '.join(_RESOLVERS[i][0] for i in range(len(_RESOLVERS)))}. Both containers share "
            f"{', '.join(shared)}; see docker.realtime.tenant_host for the names Realtime answers to.",
            remedy="Nothing to change if docker.realtime.tenant_host passes.",
            evidence=evidence,
        )
    return CheckResult(
        cid, Status.PASS,
        summary=f"Inside {gw.name}, {', '.join(hosts)} resolves to {info.name} (shared network "
        f"{', '.join(shared)}; {tool_used}).",
        evidence=evidence,
    )


# ------------------------------------------------------------------ docker.realtime.logs


@dataclass(frozen=True)
class LogLine:
    """One console line of Realtime, split the way its formatter writes it.

    Realtime's ``config/config.exs`` formatter is ``$time $metadata[$level] $message``: the
    metadata (``project= external_id= error_code= ...``) comes **before** the level (research
    notes §6). Lines of other shapes (crash reports, older formats) keep their text as the message.
    """

    time: str
    metadata: dict[str, str]
    level: str
    message: str


_LOG_LINE = re.compile(
    r"^(?P<time>\d{2}:\d{2}:\d{2}\.\d{3})\s+(?P<meta>(?:[a-z_]+=\S*\s+)*)"
    r"\[(?P<level>debug|info|notice|warning|warn|error|critical|alert|emergency)\]\s?(?P<message>.*)$"
)
_META_PAIR = re.compile(r"([a-z_]+)=(\S*)")


def parse_log_line(line: str) -> LogLine:
    """Split ``line`` into time, metadata, level and message (empty fields when it has another shape)."""
    m = _LOG_LINE.match(line.strip())
    if m is None:
        return LogLine("", dict(_META_PAIR.findall(line)) if "error_code=" in line else {}, "", line.strip())
    return LogLine(m.group("time"), dict(_META_PAIR.findall(m.group("meta"))), m.group("level"), m.group("message"))


@dataclass(frozen=True)
class LogSignature:
    """A known log line and what it means.

    ``level`` is the level Realtime writes it at (``warning`` lines need the client's
    ``log_level=warning|info`` to be written at all); ``codes`` are the ``error_code`` metadata
    values that identify it even when the message text differs.
    """

    code: str
    pattern: re.Pattern[str]
    cause: str
    remedy: str
    severity: Status = Status.FAIL
    see_also: tuple[str, ...] = ()
    cause_id: str = ""  # the matching cause in rtbook.remedies, when there is one
    level: str = "error"
    codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogFinding:
    """One signature found in the logs."""

    signature: LogSignature
    count: int
    first: str
    last: str
    captured: tuple[str, ...] = ()
    levels: tuple[tuple[str, int], ...] = ()
    tenants: tuple[str, ...] = ()
    cause_id: str = ""  # refined from the lines themselves (e.g. the Postgrex error inside)


_SIGNATURE_CAUSES = {
    "TenantNotFound": "tenant_not_found",
    "TenantsRelationMissing": "realtime_schema_missing",
    "ReplicationSlotBeingUsed": "replication_slot_in_use",
    "MigrationsFailed": "realtime_schema_permission",
    "JwtError": "jwt_signature",
    "TokenExpired": "token_expired",
    "PoolingReplicationPreparationError": "no_events",
    "ReplicationPollerMaxRetriesReached": "no_events",
    "ReplicationPollerConnectionFailed": "no_events",
    "StartReplicationFailed": "replication_capacity",
    "UnableToConnectToProject": "tenant_db_unreachable",
    "JoinsRateLimitReached": "too_many_joins_at_connect",
    "ClientJoinRateLimitReached": "too_many_joins",
    "MissingApiKey": "missing_api_key",
    "MalformedJWT": "malformed_jwt",
}


def _sig(code: str, pattern: str, cause: str, remedy: str, severity: Status = Status.FAIL,
         see_also: tuple[str, ...] = (), *, level: str = "error", codes: tuple[str, ...] = ()) -> LogSignature:
    return LogSignature(code, re.compile(pattern, re.I), cause, remedy, severity, see_also,
                        _SIGNATURE_CAUSES.get(code, ""), level, codes)


# First match per line wins: Realtime's own error codes first, generic wordings (connection
# refused...) last, so that e.g. a PoolingReplicationPreparationError carrying a refused connection
# is reported as what it is.
LOG_SIGNATURES: tuple[LogSignature, ...] = (
    _sig("PoolingReplicationPreparationError", r"PoolingReplicationPreparationError",
         "Realtime's postgres_changes poller could not prepare its replication: creating the wal2json slot (or, "
         "in newer images, reading the publication) failed; the inspected Postgrex error on the line names why. "
         "Until it succeeds no postgres_changes event is delivered (research notes §4.1).",
         "Read the Postgrex message in the line: wal_level must be logical, wal2json installed, and a "
         "replication slot and WAL sender free (max_replication_slots, max_wal_senders); see db.wal_level, "
         "db.wal2json, db.replication_capacity.",
         see_also=("db.wal_level", "db.wal2json", "db.replication_capacity"),
         codes=("PoolingReplicationPreparationError",)),
    _sig("ReplicationPollerMaxRetriesReached", r"ReplicationPollerMaxRetriesReached",
         "Realtime (v2.102.2+) gave up on the tenant's postgres_changes after 6 failed polls and stopped its CDC "
         "processes. Channels already joined are not told: they stay 'subscribed' and receive nothing until a "
         "new join restarts CDC.",
         "Fix the reason on the line (often the replication slot or the database connection), then make clients "
         "rejoin (or restart realtime).",
         see_also=("db.realtime_slots", "db.replication_capacity"),
         codes=("ReplicationPollerMaxRetriesReached",)),
    _sig("ReplicationPollerConnectionFailed", r"ReplicationPollerConnectionFailed",
         "The postgres_changes poller could not open its database connection and stopped.",
         "Check the tenant's database settings (db_host/db_port/db_user/db_password of the extension row) and "
         "that the database accepts connections; see tenant.db_settings.",
         see_also=("tenant.db_settings",), codes=("ReplicationPollerConnectionFailed",)),
    _sig("StartReplicationFailed",
         r"StartReplicationFailed|ReplicationMaxWalSendersReached|ReplicationConnectionTimeout",
         "Realtime could not start the tenant's broadcast-from-database replication connection (the one behind "
         "realtime.send()/realtime.broadcast_changes()); ReplicationMaxWalSendersReached means max_wal_senders "
         "is used up.",
         "Raise max_wal_senders and max_replication_slots (restart PostgreSQL) or drop unused slots; for a "
         "timeout check the database's load; see db.replication_capacity.",
         see_also=("db.replication_capacity",),
         codes=("StartReplicationFailed", "ReplicationMaxWalSendersReached", "ReplicationConnectionTimeout")),
    _sig("UnableToConnectToProject", r"UnableToConnectToProject|UnableToConnectToTenantDatabase",
         "Realtime cannot connect to the tenant's database (UnableToConnectToTenantDatabase names the error, "
         "UnableToConnectToProject is what the joins were told): every channel join fails, broadcast-only ones "
         "too.",
         "Make the database reachable from realtime at the extension row's db_host/db_port (seeded from DB_HOST/"
         "DB_PORT); see tenant.db_settings and db.connect.",
         see_also=("tenant.db_settings", "db.connect"),
         codes=("UnableToConnectToProject", "UnableToConnectToTenantDatabase")),
    _sig("JoinsRateLimitReached", r"JoinsRateLimitReached",
         "The handshake refused sockets because the tenant's joins per second were over max_joins_per_second "
         "(429 'Too many joins per second'): usually clients reconnecting in a loop.",
         "Raise max_joins_per_second on the tenant row if the load is real; otherwise find the client that "
         "reconnects without backoff.",
         Status.WARN, codes=("JoinsRateLimitReached",)),
    _sig("ClientJoinRateLimitReached", r"ClientJoinRateLimitReached",
         "A channel join tripped the tenant's joins-per-second counter (logged at critical, once per trip, not "
         "per refused join); the refused clients were disconnected.",
         "Raise max_joins_per_second on the tenant row if the load is real, or make clients rejoin with backoff.",
         Status.WARN, level="critical"),
    _sig("MissingApiKey", r"MissingAPIKey|API key is missing",
         "Sockets arrived without an apikey (no x-api-key header, no apikey parameter): a gateway stripping "
         "credentials (key-auth hide_credentials: true) or a client sending none.",
         "Keep hide_credentials: false on the key-auth plugin of kong.yml's realtime-v1-ws service and send "
         "apikey=<ANON_KEY> from clients; see kong.realtime_auth.",
         see_also=("kong.realtime_auth",), codes=("MissingAPIKey",)),
    _sig("MalformedJWT", r"MalformedJWT|not a valid JWT",
         "A token that is not a JWT reached Realtime (truncated, quoted, or an opaque sb_ key not translated by "
         "the gateway).",
         "Send the full ANON_KEY JWT (three dot-separated parts); see env.api_keys.",
         see_also=("env.api_keys",), codes=("MalformedJWT",)),
    _sig("TenantNotFound",
         r"TenantNotFound: Tenant not found:?\s*(\S*)|Auth error: tenant `?([^`\s]+)`? not found|Tenant not found",
         "A request reached Realtime with a Host header whose first label is not an existing tenant "
         "(realtime-facts 1.1, 10.1): the gateway's upstream host, a proxy rewriting Host, or a client "
         "connecting by IP or another name.",
         "Keep the Host's first label equal to the tenant id (the upstream host realtime-dev.supabase-realtime "
         "gives realtime-dev), or set SELF_HOST_TENANT_NAME to the label the Host carries; see "
         "docker.realtime.tenant_host.",
         see_also=("docker.realtime.tenant_host",), codes=("TenantNotFound",)),
    _sig("TenantsRelationMissing", r"relation \"(?:_realtime\.)?tenants\" does not exist",
         "Realtime's metadata schema _realtime is missing or not on the search_path: the migrations did not run "
         "(realtime-facts 10.6).",
         "Mount volumes/db/realtime.sql into the db container (it creates _realtime), keep "
         "DB_AFTER_CONNECT_QUERY: 'SET search_path TO _realtime', and restart Realtime so it migrates."),
    _sig("BooleanAtom", r"binary_to_existing_atom",
         "A boolean variable has a value Realtime cannot parse (e.g. True from Podman or an unquoted YAML "
         "boolean) and it crashes at boot (realtime-facts 10.3).",
         "Quote booleans as the strings \"true\"/\"false\" in the compose file (SEED_SELF_HOST: \"true\", "
         "RUN_JANITOR: \"true\"), or upgrade to Realtime >= v2.65.2."),
    _sig("ReplicationSlotBeingUsed", r"ReplicationSlotBeingUsed|replication slot .* is active for PID",
         "Another connection holds Realtime's replication slot: a second Realtime on the same database or a "
         "stale backend (realtime-facts 10.9).",
         "Stop the other Realtime; or terminate the holder: SELECT pg_terminate_backend(active_pid) FROM "
         "pg_replication_slots WHERE slot_name LIKE 'supabase_realtime%' AND active;",
         codes=("ReplicationSlotBeingUsed",)),
    _sig("DbHostUnresolvable", r"Failed to detect IP version for DB_HOST",
         "DB_HOST does not resolve inside the Realtime container, so Realtime crashes at boot (realtime-facts 7.3).",
         "Set DB_HOST to the database service name (POSTGRES_HOST=db in .env) and put Realtime on the database's "
         "network, or set DB_IP_VERSION (ipv4/ipv6) to skip the detection."),
    _sig("MigrationsFailed",
         r"MigrationsFailedToRun|Migrations? failed|migration.*(?:error|failed)|permission denied for schema",
         "Realtime could not migrate its own or the tenant's schema; most often DB_USER is not supabase_admin "
         "or lacks rights on the realtime schema (realtime-facts 10.11).",
         "Use DB_USER: supabase_admin (the compose default) with the right DB_PASSWORD; check the database log."),
    _sig("DbAuthFailed", r"password authentication failed for user",
         "DB_PASSWORD does not match the database: POSTGRES_PASSWORD was changed after the data directory was "
         "initialised, or Realtime's env is stale.",
         "Put the password the database really has in POSTGRES_PASSWORD (or change it in the database with "
         "ALTER ROLE), then docker compose up -d --force-recreate realtime."),
    _sig("JwtError",
         r"JwtSignatureError|JWSInvalidSignature|signature_error|Failed to validate JWT signature|"
         r"InvalidJWTToken: Token expiration time is invalid|error_generating_signer|JwtSignerError|"
         r"JwtClaimValidatorsError",
         "A token was refused: the client's JWT is not signed with Realtime's API_JWT_SECRET (or the tenant's "
         "jwt_secret), or JWT_CLAIM_VALIDATORS is malformed (realtime-facts 6, 10.10). A bad signature at the "
         "handshake is logged as 'ErrorConnectingToWebsocket: {:error, :signature_error}'.",
         "Make ANON_KEY/SERVICE_ROLE_KEY signed by JWT_SECRET and API_JWT_SECRET: ${JWT_SECRET}; if the tenant "
         "row keeps an old secret, re-seed it (see the tenant.* checks).",
         see_also=("docker.realtime.env",)),
    _sig("TokenExpired", r"Token has expired|expired_token|ExpiredToken|Fields `role` and `exp` are required",
         "Clients connect or join with expired tokens or tokens without role/exp. Realtime logs these only at "
         "warning level and only for clients that connected with log_level=warning or info, so what is here "
         "is a sample at best.",
         "Refresh the access token on the client (supabase.realtime.setAuth / the access_token event) and mint "
         "keys with role and exp.",
         Status.WARN, level="warning"),
    _sig("SecretKeyBaseMissing", r"SECRET_KEY_BASE.*(?:missing|not set|is required)",
         "SECRET_KEY_BASE is not set; Realtime refuses to boot (realtime-facts 7.3).",
         "Set SECRET_KEY_BASE (64 characters) in .env and pass it as SECRET_KEY_BASE: ${SECRET_KEY_BASE}."),
    _sig("DbUnreachable", r"\(DBConnection\.ConnectionError\)|connection refused|:econnrefused|:nxdomain",
         "Realtime cannot reach its database.",
         "Check DB_HOST/DB_PORT and that the db container is healthy and on Realtime's network.",
         Status.WARN),
    _sig("TooManyOpenFiles", r"emfile|too many open files",
         "Realtime ran out of file descriptors.",
         "Raise RLIMIT_NOFILE and the container's nofile ulimit; see docker.realtime.limits.",
         see_also=("docker.realtime.limits",)),
    _sig("RateLimited",
         r"ConnectionRateLimitReached|MessagePerSecondRateLimitReached|"
         r"ChannelRateLimitReached|PresenceRateLimitReached|Too many connected users",
         "A tenant limit was reached (realtime-facts 9).",
         "Raise the tenant's limit (PATCH /api/tenants/<id> or the TENANT_MAX_* env defaults) if the load is "
         "legitimate.",
         Status.WARN),
)

# What Realtime does not write at its default levels, so an absent line proves nothing (notes §2, §3, §6).
HIDDEN_BY_DEFAULT = (
    "Expired tokens ('InvalidJWTToken: Token has expired N seconds ago') and tokens without role/exp are "
    "logged only at warning level and only for clients that connected with log_level=warning or info; with "
    "the default (error) Realtime writes nothing for them, so this log cannot show them. Test tokens with "
    "realtime.bad_token or the client's own error (CHANNEL_ERROR / the join reply) instead."
)
_TOKEN_CODES = frozenset({"JwtError", "TokenExpired", "MalformedJWT", "MissingApiKey"})


def _line_matches(sig: LogSignature, line: str, parsed: LogLine) -> re.Match[str] | bool:
    m = sig.pattern.search(line)
    if m is not None:
        return m
    return bool(sig.codes) and parsed.metadata.get("error_code") in sig.codes


def scan_logs(text: str, signatures: Sequence[LogSignature] = LOG_SIGNATURES) -> list[LogFinding]:
    """Find every known signature in ``text`` (one finding per signature, with counts, levels and examples)."""
    hits: dict[str, list[str]] = {}
    captured: dict[str, list[str]] = {}
    levels: dict[str, dict[str, int]] = {}
    tenants: dict[str, list[str]] = {}
    for line in text.splitlines():
        parsed = parse_log_line(line)
        for sig in signatures:
            m = _line_matches(sig, line, parsed)
            if not m:
                continue
            hits.setdefault(sig.code, []).append(line.strip())
            if isinstance(m, re.Match):
                groups = [g for g in m.groups() if g]
                captured.setdefault(sig.code, []).extend(groups)
            if parsed.level:
                counts = levels.setdefault(sig.code, {})
                counts[parsed.level] = counts.get(parsed.level, 0) + 1
            ext = parsed.metadata.get("external_id")
            if ext:
                tenants.setdefault(sig.code, []).append(ext)
            break
    out = []
    for sig in signatures:
        lines = hits.get(sig.code)
        if lines:
            caps = tuple(dict.fromkeys(captured.get(sig.code, [])))[:10]
            out.append(LogFinding(sig, len(lines), lines[0][:400], lines[-1][:400], caps,
                                  tuple(sorted(levels.get(sig.code, {}).items())),
                                  tuple(dict.fromkeys(tenants.get(sig.code, [])))[:10],
                                  _refine_cause(sig, lines)))
    return out


def _refine_cause(sig: LogSignature, lines: list[str]) -> str:
    """The cause the lines themselves name (the Postgrex error inside a replication failure), else the signature's."""
    if sig.code in ("PoolingReplicationPreparationError", "ReplicationPollerMaxRetriesReached",
                    "StartReplicationFailed"):
        for line in reversed(lines):
            found = diagnose(message=line)
            if found is not None and found.id in ("wal_level", "wal2json_missing", "replication_capacity",
                                                  "replication_slot_in_use"):
                return found.id
    return sig.cause_id


@register("docker.realtime.logs", "Realtime logs free of known failure signatures", needs=("docker",),
          using=_need_realtime)
def check_logs(target: Target, cid: str, got: _Live) -> CheckResult:
    """Recent logs scanned for known signatures, each mapped to its cause and remedy (secrets redacted).

    What the default log level hides is said in the detail, so a clean log is not read as "no
    token problem".
    """
    container, info = got.container, got.info
    try:
        raw = container.logs(stdout=True, stderr=True, tail=LOG_TAIL_LINES, timestamps=False)
    except Exception as exc:
        return CheckResult(
            cid, Status.WARN, summary=f"Could not read the logs of {info.name}: {type(exc).__name__}: {exc}",
            remedy="Check the logging driver: docker logs needs json-file, local or journald "
            f"(docker logs {info.name}).",
        )
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    text = target.redactor.text(text)
    findings = scan_logs(text)
    nlines = len(text.splitlines())
    evidence: dict[str, Any] = {
        "container": info.name,
        "lines_scanned": nlines,
        "findings": [
            {"code": f.signature.code, "count": f.count, "first": f.first, "last": f.last,
             "captured": list(f.captured), "severity": f.signature.severity.value,
             "logged_at": f.signature.level, "levels_seen": dict(f.levels), "tenants": list(f.tenants),
             "cause": f.cause_id}
            for f in findings
        ],
        "not_logged_by_default": ["InvalidJWTToken: Token has expired ...",
                                  "InvalidJWTToken: Fields `role` and `exp` are required in JWT",
                                  "ChannelShutdown", "ReconnectSubscribeToPostgres"],
    }
    if not findings:
        return CheckResult(
            cid, Status.PASS,
            summary=f"No known failure signature in the last {nlines} log lines of {info.name}.",
            detail=HIDDEN_BY_DEFAULT,
            evidence=evidence,
        )
    status = Status.FAIL if any(f.signature.severity is Status.FAIL for f in findings) else Status.WARN
    detail = []
    remedy = []
    tenant = _tenant(info, target)[0]
    for f in findings:
        extra = f" (values: {', '.join(f.captured)})" if f.captured else ""
        seen = f" [{', '.join(f'{lvl} x{n}' for lvl, n in f.levels)}]" if f.levels else ""
        detail.append(f"{f.signature.code} x{f.count}{extra}{seen}: {f.signature.cause} Last line: {f.last}")
        if f.signature.code == "TenantNotFound" and tenant in f.captured:
            detail.append(
                f"TenantNotFound names {tenant!r}, the tenant this stack seeds. If that row exists, on Realtime "
                "v2.78 images this is how a socket WITHOUT an apikey is logged (403 without a body at the client); "
                "newer images log MissingAPIKey instead.")
        remedy.append(f"[{f.signature.code}] {f.signature.remedy}")
    if any(f.signature.code in _TOKEN_CODES for f in findings):
        detail.append(HIDDEN_BY_DEFAULT)
    see = tuple(dict.fromkeys(s for f in findings for s in f.signature.see_also))
    return CheckResult(
        cid, status,
        summary=f"{len(findings)} known signature{'s' if len(findings) != 1 else ''} in {info.name}'s logs: "
        + ", ".join(f"{f.signature.code} ({f.count})" for f in findings) + ".",
        detail="\n".join(detail), remedy="\n".join(remedy), evidence=evidence, see_also=see,
        cause=next((f.cause_id for f in findings if f.cause_id), ""),
    )


# ------------------------------------------------------------------ docker.realtime.limits

# The script, the baseline needs and the parsing live in rtbook.clients.docker: rtbook load reads
# the same limit before and after a run.


def _max_users(info: ContainerInfo, target: Target) -> tuple[int, str]:
    cached = target.cache.get("tenant.limits")
    if isinstance(cached, Mapping) and isinstance(cached.get("max_concurrent_users"), int):
        return int(cached["max_concurrent_users"]), "the tenant row (max_concurrent_users)"
    value = info.env.get("TENANT_MAX_CONCURRENT_USERS")
    if value and value.isdigit():
        return int(value), "TENANT_MAX_CONCURRENT_USERS in the container"
    return 200, "Realtime's default max_concurrent_users (200)"


@register("docker.realtime.limits", "Open-files and memory limits fit the tenant limits", needs=("docker",),
          using=_need_realtime)
def check_limits(target: Target, cid: str, got: _Live) -> CheckResult:
    """The open-files limit inside the container and the memory limit against what the tenant limits need."""
    disc, container, info = got.disc, got.container, got.info
    service = disc.realtime_service
    users, users_source = _max_users(info, target)
    need_fds = users + FD_BASELINE
    need_mem = MEM_BASELINE + users * MEM_PER_USER
    evidence: dict[str, Any] = {
        "container": info.name, "max_concurrent_users": users, "users_source": users_source,
        "needed_open_files": need_fds, "needed_memory": need_mem, "memory_limit": info.memory_limit,
        "rlimit_nofile_env": info.env.get("RLIMIT_NOFILE"),
        "host_ulimits": [{"name": u.name, "soft": u.soft, "hard": u.hard} for u in info.ulimits],
    }
    if not info.state.running or info.state.restarting:
        return CheckResult(cid, Status.SKIP, summary=f"Skipped: {info.name} is not running (see "
                           "docker.realtime.running).", evidence=evidence)
    read = read_open_files(container)
    outcome, soft, hard = read.outcome, read.soft, read.hard
    if outcome.exit_code == 0:
        evidence["limits_of_pid"] = read.pid
    evidence["open_files_soft"] = soft
    evidence["open_files_hard"] = hard
    evidence["exec"] = {"exit_code": outcome.exit_code, "error": outcome.error}
    problems: list[tuple[str, str]] = []  # (short, long)
    warns: list[tuple[str, str]] = []
    spec: dict[str, Any] = {}
    rl = info.env.get("RLIMIT_NOFILE", "")
    want = max(need_fds, int(rl) if rl.isdigit() else 0, 10000)
    if soft is None:
        warns.append((
            "open-files limit unreadable",
            f"could not read the open-files limit inside {info.name} ({read.problem})",
        ))
    elif soft < need_fds:
        problems.append((
            f"open files {soft} < ~{need_fds} needed",
            f"the Realtime process may open {soft} files (hard limit {hard}); {users} concurrent users "
            f"({users_source}) need about {need_fds} (one per WebSocket plus {FD_BASELINE} for the VM)",
        ))
        spec["ulimits"] = {"nofile": {"soft": want, "hard": want}}
        spec["environment"] = {"RLIMIT_NOFILE": str(want)}
    if rl.isdigit() and hard is not None and int(rl) > hard:
        warns.append((
            f"RLIMIT_NOFILE {rl} > hard limit {hard}",
            f"RLIMIT_NOFILE={rl} exceeds the container's hard limit {hard}, so Realtime cannot raise its limit to it",
        ))
        spec.setdefault("ulimits", {"nofile": {"soft": int(rl), "hard": int(rl)}})
    if info.memory_limit and info.memory_limit < need_mem:
        warns.append((
            f"memory {_fmt_bytes(info.memory_limit)} < ~{_fmt_bytes(need_mem)} needed",
            f"the memory limit is {_fmt_bytes(info.memory_limit)}; {users} concurrent users need about "
            f"{_fmt_bytes(need_mem)} ({_fmt_bytes(MEM_BASELINE)} for the VM + {_fmt_bytes(MEM_PER_USER)} per user, "
            "a rough estimate)",
        ))
        spec["mem_limit"] = f"{max(512, -(-need_mem // (1 << 20)))}m"
    if problems or warns:
        patch = override_yaml(service, spec) if spec else ""
        if patch:
            evidence["override_yaml"] = patch
        found = problems + warns
        return CheckResult(
            cid, Status.FAIL if problems else Status.WARN,
            summary=f"{info.name} limits too low for {users} users: " + "; ".join(x[0] for x in found) + ".",
            detail="; ".join(x[1] for x in found) + ".",
            remedy=("Raise the limits:\n" + patch) if patch else f"Read the limit by hand: docker exec {info.name} "
            "sh -c 'ulimit -n'.",
            evidence=evidence, see_also=("docker.realtime.running",),
        )
    return CheckResult(
        cid, Status.PASS,
        summary=f"{info.name} may open {soft} files (needs ~{need_fds}) and has "
        f"{_fmt_bytes(info.memory_limit)} memory (needs ~{_fmt_bytes(need_mem)}) for {users} users.",
        evidence=evidence,
    )
