"""Running registered checks against a target."""

from __future__ import annotations

import contextvars
import dataclasses
import importlib
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import rtbook.deadline as _deadline
from rtbook.exceptions import ConfigError
from rtbook.results import CheckResult, Report, Status

if TYPE_CHECKING:
    from rtbook.target import Target

__all__ = [
    "CHECK_MODULES",
    "CheckSpec",
    "all_checks",
    "areas_for",
    "check_deadline",
    "command_deadline",
    "get_check",
    "load_check_modules",
    "register",
    "run_checks",
    "run_one",
    "select_checks",
]



# ---------------------------------------------------------------- registry

# A check is called as func(target, check_id) or, with a provider, func(target, check_id, context).
CheckFunc = Callable[..., "CheckResult | Iterable[CheckResult]"]
# What a check needs before it can start (a loaded gateway config, the Realtime service...): the
# provider returns it, or the result (usually a skip) that stands in for the check when it is absent.
Provider = Callable[["Target", str], Any]

# ---------------------------------------------------------------- deadlines
#
# A check's deadline is  LOCAL_S + steps x --timeout + grace:
#   LOCAL_S   5 s for the check's own work (reading parsed files, building results) on a loaded machine;
#   steps     the network steps the check may wait on, each allowed --timeout: declared in
#             @register(steps=...); by default 0 for a check that reads files only (needs only
#             "stack" or nothing) and NETWORK_STEPS for one that talks to an endpoint;
#   grace     seconds the server itself is allowed to hold an answer, declared in @register(grace=...).
# It is enforced around the whole check (provider included): the clients cut every socket
# operation to what is left and shut a blocked socket down when it runs out (and one HTTP request
# or WebSocket upgrade never takes more than 2 x --timeout, resp. --timeout + Realtime's hold), and
# a watchdog gives the check WATCHDOG_S more before it records a ``fail`` naming what the check was
# waiting for and moves on. The command's deadline is the sum of its checks' deadlines: a check
# never gets more than what is left of it, so the command ends at most WATCHDOG_S after it.
LOCAL_S = 5.0
NETWORK_STEPS = 4
WATCHDOG_S = 2.0
_LOCAL_NEEDS = frozenset({"stack"})


@dataclass(frozen=True)
class CheckSpec:
    """A registered check: its id, title, what it needs and the function that runs it."""

    id: str
    title: str
    func: CheckFunc
    needs: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    using: Provider | None = None
    steps: int | None = None
    grace: float | Callable[[Target], float] = 0.0

    @property
    def network_steps(self) -> int:
        """The declared step budget, else 0 for a files-only check and NETWORK_STEPS otherwise."""
        if self.steps is not None:
            return self.steps
        return 0 if set(self.needs) <= _LOCAL_NEEDS else NETWORK_STEPS

    @property
    def area(self) -> str:
        """The first component of the id (``compose``, ``kong``, ``db``...)."""
        return self.id.split(".", 1)[0]


_REGISTRY: dict[str, CheckSpec] = {}


def register(
    check_id: str,
    title: str,
    *,
    needs: Sequence[str] = (),
    tags: Sequence[str] = (),
    using: Provider | None = None,
    steps: int | None = None,
    grace: float | Callable[[Target], float] = 0.0,
) -> Callable[[CheckFunc], CheckFunc]:
    """Register a check function under a stable id; the id is written here only.

    The function is called with the target and its own id (for the results it returns).
    ``needs`` names what the check requires from the target (``stack``, ``db``, ``gateway``,
    ``realtime``, ``docker``); the runner skips the check with that reason when it is absent.
    ``using`` is a provider called as ``using(target, check_id)`` before the check: a
    :class:`CheckResult` from it stands in for the check, anything else is passed to the check as
    its third argument. That keeps the "load it or skip" preamble out of every check.
    ``steps`` and ``grace`` set the check's deadline (see :func:`check_deadline`).
    """
    if steps is not None and steps < 0:
        raise ConfigError(f"check {check_id!r}: steps must be >= 0, got {steps!r}")
    if check_id.count(".") < 1 or check_id != check_id.strip():
        raise ConfigError(f"check id {check_id!r} must be dotted, e.g. 'kong.realtime_ws'")

    area = check_id.split(".", 1)[0]

    def decorate(func: CheckFunc) -> CheckFunc:
        module = getattr(func, "__module__", "") or ""
        if module.startswith(_CHECKS_PACKAGE) and module.rsplit(".", 1)[1] != area:
            # The registry imports rtbook.checks.<area> only when an <area>.* check is selected.
            raise ConfigError(f"check id {check_id!r} is registered in {module}; put it in {_CHECKS_PACKAGE}{area}")
        existing = _REGISTRY.get(check_id)
        if existing is not None and existing.func.__qualname__ != func.__qualname__:
            raise ConfigError(f"check id {check_id!r} is registered twice ({existing.func.__qualname__})")
        _REGISTRY[check_id] = CheckSpec(check_id, title, func, tuple(needs), tuple(tags), using, steps, grace)
        return func

    return decorate


def all_checks() -> list[CheckSpec]:
    """Every registered check, in the order of :data:`CHECK_MODULES` (importing every check module first)."""
    load_check_modules()
    order = {name.rsplit(".", 1)[1]: i for i, name in enumerate(CHECK_MODULES)}
    return sorted(_REGISTRY.values(), key=lambda s: order.get(s.area, len(order)))


def get_check(check_id: str) -> CheckSpec:
    """Return the spec for ``check_id``; raise ConfigError naming close ids when unknown."""
    load_check_modules([check_id.split(".", 1)[0]])
    try:
        return _REGISTRY[check_id]
    except KeyError:
        all_checks()
        close = [k for k in _REGISTRY if k.startswith(check_id.split(".", 1)[0])]
        raise ConfigError(
            f"no check with id {check_id!r}; run 'rtbook checks' for the list"
            + (f" (same area: {', '.join(close[:8])})" if close else "")
        ) from None


def _call(spec: CheckSpec, target: Target) -> CheckResult | Iterable[CheckResult]:
    if spec.using is None:
        return spec.func(target, spec.id)
    context = spec.using(target, spec.id)
    if isinstance(context, CheckResult):
        return context
    return spec.func(target, spec.id, context)


def check_deadline(spec: CheckSpec, target: Target) -> float:
    """Seconds ``spec`` may run against ``target``: LOCAL_S + steps x timeout + grace (see the module notes)."""
    grace = spec.grace
    if callable(grace):
        try:
            extra = float(grace(target))
        except Exception:  # a grace that cannot be computed (unreadable stack) adds nothing
            extra = 0.0
    else:
        extra = float(grace)
    return LOCAL_S + spec.network_steps * target.timeout + max(0.0, extra)


def command_deadline(specs: Iterable[CheckSpec], target: Target) -> float:
    """Seconds a run of ``specs`` may take: the sum of their deadlines (the run ends by WATCHDOG_S after it)."""
    return sum(check_deadline(s, target) for s in specs)


def _body(spec: CheckSpec, target: Target) -> list[CheckResult]:
    """The check's results; a crash becomes an ``error`` result and a spent deadline a ``fail``."""
    try:
        missing = [need for need in spec.needs if not target.has(need)]
        if missing:
            return [
                CheckResult(
                    spec.id,
                    Status.SKIP,
                    spec.title,
                    summary=f"Skipped: the target has no {', '.join(missing)} "
                    f"({target.why_missing(missing[0])}).",
                )
            ]
        produced = _call(spec, target)
        out = [produced] if isinstance(produced, CheckResult) else list(produced)
        for r in out:
            if not isinstance(r, CheckResult):
                raise TypeError(f"check {spec.id} returned {type(r).__name__}, not CheckResult")
        return out
    except _deadline.DeadlineExceeded as exc:
        return [_overrun(spec, target, exc.seconds, exc.endpoint, exc.awaiting, exc.elapsed)]
    except Exception as exc:  # a check must never stop the run
        tb = traceback.format_exception_only(type(exc), exc)
        return [
            CheckResult(
                spec.id,
                Status.ERROR,
                spec.title,
                summary=f"The check {spec.id} crashed: {type(exc).__name__}: {exc}",
                detail="".join(tb).strip(),
                remedy="This is a bug in rtbook or an input it does not understand; "
                "report it with the detail above.",
            )
        ]


def _overrun(spec: CheckSpec, target: Target, seconds: float, endpoint: str, awaiting: str,
             elapsed: float) -> CheckResult:
    """The ``fail`` of a check whose deadline ran out, naming the endpoint and what it waited for."""
    steps = spec.network_steps
    return CheckResult(
        spec.id,
        Status.FAIL,
        spec.title,
        summary=f"No verdict within the check's {seconds:g} s deadline: still waiting for {awaiting} "
        f"from {endpoint} after {elapsed:.1f} s.",
        detail=f"The deadline is {LOCAL_S:g} s + {steps} network step(s) x --timeout {target.timeout:g} s "
        f"+ the check's grace (or what was left of the command's deadline), enforced around the whole "
        "check (README: Deadlines). An endpoint that "
        "accepts a connection and then answers slowly, never or with something else keeps every single "
        "read within --timeout but not the check.",
        remedy=f"Check that {endpoint} is the service rtbook expects (right host and port, not a proxy "
        "or firewall that holds connections open) and that it answers; raise --timeout only if it is "
        "known to be that slow.",
        evidence={"deadline_s": round(seconds, 3), "elapsed_s": round(elapsed, 3), "endpoint": endpoint,
                  "waiting_for": awaiting, "timeout_s": target.timeout, "steps": steps},
    )


def run_one(spec: CheckSpec, target: Target, *, limit_s: float | None = None) -> list[CheckResult]:
    """Run one check within its deadline and return its results; never raises, never hangs.

    The check runs in a worker thread inside a :func:`rtbook.deadline.scope` of
    :func:`check_deadline` seconds (at most ``limit_s``, what is left of the command's deadline).
    A crash becomes an ``error`` result; a check still running WATCHDOG_S after its deadline is
    left behind (its sockets were already shut down) and recorded as a ``fail`` naming the
    endpoint and what it was waiting for.
    """
    started = time.perf_counter()
    seconds = check_deadline(spec, target)
    if limit_s is not None:
        seconds = max(0.0, min(seconds, limit_s))
    sc = _deadline.Scope(seconds, spec.id)
    box: list[list[CheckResult]] = []

    def work() -> None:
        with _deadline.scope(sc):
            box.append(_body(spec, target))

    # The worker runs in a copy of the caller's context, so context variables the caller set hold there too.
    worker = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True,
                              name=f"rtbook-check-{spec.id}")
    worker.start()
    worker.join(sc.deadline.remaining() + WATCHDOG_S)
    if box:
        out = box[0]
    else:
        sc.fire()  # in case the timer thread could not run: shut down whatever the check still holds
        endpoint, awaiting = sc.waiting() or ("(no network endpoint)", "its own work")
        out = [_overrun(spec, target, seconds, endpoint, awaiting, sc.deadline.elapsed())]
    elapsed = (time.perf_counter() - started) * 1000
    final = []
    for r in out:
        if "<" in r.remedy:
            r = dataclasses.replace(r, remedy=_finish_remedy(r.remedy, target))
        if not r.title:
            r = dataclasses.replace(r, title=spec.title)
        if not r.duration_ms:
            r = dataclasses.replace(r, duration_ms=elapsed / max(len(out), 1))
        final.append(r.redacted(target.redactor))
    return final

def _finish_remedy(remedy: str, target: Target) -> str:
    """Fill the placeholders a check left in its remedy with the target's values (or words): none is ever shown."""
    from rtbook.remedies import finish

    values: dict[str, str | None] = {}
    try:
        values["tenant"] = values["id"] = target.resolved_tenant()
        for name in ("DB_HOST", "DB_PORT"):
            values[name] = target.lookup(name)
    except Exception:  # filling a remedy must never cost the result: words stand in for the values
        pass
    if len(target.tables) == 1 and "." in target.tables[0]:
        values["schema"], values["table"] = target.tables[0].split(".", 1)
    return finish(remedy, values)


# Every module that registers checks, in the order a run goes through them: static first,
# then containers, database, gateway and subscriptions. rtbook.checks.<area> registers the
# <area>.* ids and nothing else (register() refuses any other), so the registry can import a
# module only when one of its checks is selected: a file check never imports SQLAlchemy, psycopg,
# the Docker SDK or websocket-client, which only the live areas need.
_CHECKS_PACKAGE = "rtbook.checks."
CHECK_MODULES = (
    "rtbook.checks.compose",
    "rtbook.checks.env",
    "rtbook.checks.kong",
    "rtbook.checks.envoy",
    "rtbook.checks.docker",
    "rtbook.checks.tenant",
    "rtbook.checks.db",
    "rtbook.checks.gateway",
    "rtbook.checks.realtime",
    "rtbook.checks.lb",
    "rtbook.checks.cluster",
)
_MODULE_OF_AREA = {name.rsplit(".", 1)[1]: name for name in CHECK_MODULES}
_loaded: set[str] = set()


def load_check_modules(areas: Iterable[str] | None = None) -> None:
    """Import the check modules of ``areas`` (every one when None) so that their checks are registered."""
    names = CHECK_MODULES if areas is None else [_MODULE_OF_AREA[a] for a in areas if a in _MODULE_OF_AREA]
    for name in names:
        if name not in _loaded:
            importlib.import_module(name)
            _loaded.add(name)


def areas_for(only: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """The check areas that can hold an id starting with one of ``only`` (any when empty) and none of ``exclude``.

    An id of area ``a`` is ``a.<rest>``: a prefix can match one when it starts with ``a.`` or
    ``a.`` starts with it (``"kong"``, ``"e"``); an exclude prefix removes the whole area only
    when ``a.`` starts with it.
    """
    def selected(area: str) -> bool:
        head = area + "."
        if any(head.startswith(e) for e in exclude):
            return False
        return not only or any(p.startswith(head) or head.startswith(p) for p in only)

    return [area for area in _MODULE_OF_AREA if selected(area)]


def select_checks(only: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[CheckSpec]:
    """Registered checks whose id starts with one of ``only`` (all when empty) and none of ``exclude``.

    Only the check modules that can hold such a check are imported.
    """
    only_t = tuple(only)
    exclude_t = tuple(exclude)
    load_check_modules(areas_for(only_t, exclude_t))
    specs = list(_REGISTRY.values())
    order = {area: i for i, area in enumerate(_AREA_ORDER)}
    specs.sort(key=lambda s: order.get(s.area, len(order)))
    return [
        s
        for s in specs
        if (not only_t or s.id.startswith(only_t)) and not (exclude_t and s.id.startswith(exclude_t))
    ]


_AREA_ORDER = ("compose", "env", "kong", "envoy", "lb", "cluster", "docker", "db", "tenant", "gateway", "realtime")


def run_checks(
    target: Target, only: Iterable[str] | str = (), exclude: Iterable[str] | str = (), title: str = "",
    *, into: Report | None = None,
) -> Report:
    """Run the selected checks against ``target`` and return their report.

    Every selected check runs even when earlier ones fail; a check that crashes becomes an
    ``error`` result, one that overruns its deadline a ``fail``; the whole run ends within
    :func:`command_deadline`. ``only`` and ``exclude`` are id prefixes such as ``"kong."``. Results
    are added to ``into`` (when given) as each check ends, so a caller stopped by SIGINT/SIGTERM
    keeps them.
    """
    only_t = (only,) if isinstance(only, str) else tuple(only)
    exclude_t = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    report = into if into is not None else Report(title=title)
    specs = select_checks(only_t, exclude_t)
    # The command's deadline: no check gets more than what is left of it.
    command = _deadline.Deadline(command_deadline(specs, target))
    for spec in specs:
        report.extend(run_one(spec, target, limit_s=command.remaining()))
    return report


# Areas whose results depend on the tenant (rows, routing by public host, sockets): run once per tenant.
PER_TENANT_AREAS = ("compose.realtime.tenant_consistency", "kong.realtime_", "kong.tenants_api_blocked",
                    "envoy.realtime_", "envoy.tenants_api_blocked", "tenant.", "gateway.", "realtime.")


def run_checks_per_tenant(
    target: Target, tenants: Sequence[str], only: Iterable[str] | str = (), exclude: Iterable[str] | str = (),
    title: str = "",
) -> Report:
    """Run the selected checks once, then the tenant-dependent ones again for every further tenant.

    Each tenant gets its own target (``tenant`` set, the direct Host's first label swapped, a fresh
    cache); results of a multi-tenant run start their summary with ``[tenant]``.
    """
    only_t = (only,) if isinstance(only, str) else tuple(only)
    exclude_t = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    if len(tenants) <= 1:
        one = dataclasses.replace(target, tenant=tenants[0], cache={}) if tenants else target
        return run_checks(one, only_t, exclude_t, title)
    report = Report(title=title)
    for i, tenant in enumerate(tenants):
        host = target.realtime_host
        if host:
            host = f"{tenant}.{host.split('.', 1)[1]}" if "." in host else tenant
        each = dataclasses.replace(target, tenant=tenant, realtime_host=host, cache={})
        # Static files and the database-wide checks are the same for every tenant: once is enough.
        picked = only_t if i == 0 else tuple(
            p for p in PER_TENANT_AREAS if not only_t or any(o.startswith(p) or p.startswith(o) for o in only_t))
        if i and not picked:
            continue
        for r in run_checks(each, picked, exclude_t):
            report.add(dataclasses.replace(r, summary=f"[{tenant}] {r.summary}"))
    return report
