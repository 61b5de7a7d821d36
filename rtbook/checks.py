"""Running registered checks against a target."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from rtbook.results import _REGISTRY, CheckSpec, Report, run_one
from rtbook.target import Target

__all__ = ["CHECK_MODULES", "load_check_modules", "run_checks", "select_checks"]

# Every module that registers checks, in the order a run goes through them: static first,
# then containers, database, gateway and subscriptions.
CHECK_MODULES = (
    "rtbook.compose",
    "rtbook.kong",
    "rtbook.envoy",
    "rtbook.docker_checks",
    "rtbook.tenants",
    "rtbook.db",
    "rtbook.probes",
    "rtbook.subscriptions",
)

_loaded = False


def load_check_modules() -> None:
    """Import every check module so that its checks are registered."""
    global _loaded
    if _loaded:
        return
    for name in CHECK_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A module that is not written yet is absent from the catalogue; any other
            # missing import is a real error and propagates.
            if exc.name != name:
                raise
    _loaded = True


def select_checks(only: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[CheckSpec]:
    """Registered checks whose id starts with one of ``only`` (all when empty) and none of ``exclude``."""
    load_check_modules()
    only_t = tuple(only)
    exclude_t = tuple(exclude)
    specs = list(_REGISTRY.values())
    order = {area: i for i, area in enumerate(_AREA_ORDER)}
    specs.sort(key=lambda s: order.get(s.area, len(order)))
    return [
        s
        for s in specs
        if (not only_t or s.id.startswith(only_t)) and not (exclude_t and s.id.startswith(exclude_t))
    ]


_AREA_ORDER = ("compose", "env", "kong", "envoy", "docker", "db", "tenant", "gateway", "realtime")


def run_checks(
    target: Target, only: Iterable[str] | str = (), exclude: Iterable[str] | str = (), title: str = ""
) -> Report:
    """Run the selected checks against ``target`` and return their report.

    Every selected check runs even when earlier ones fail; a check that crashes becomes an
    ``error`` result. ``only`` and ``exclude`` are id prefixes such as ``"kong."``.
    """
    only_t = (only,) if isinstance(only, str) else tuple(only)
    exclude_t = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    report = Report(title=title)
    for spec in select_checks(only_t, exclude_t):
        report.extend(run_one(spec, target))
    return report
