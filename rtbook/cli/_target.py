"""The target options (``--stack``, ``--api-url``, ``--db-url``, ``--timeout``...), declared once.

:func:`target_options` adds all of them to a command (``check``, ``tenant plan|apply``) and hands
the command one :class:`TargetOptions`; :func:`shared_options` adds a chosen few with the same
declaration to a command that has a different notion of target (``run``, which turns them into
notebook parameters). Values that are also runbook parameters are checked up front by the
parameter schema: a URL that is not http(s), a database URL with a password or a timeout
outside ``0 < t <= 3600`` is a usage error (exit 2) before anything runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from rtbook.cli._click import InputPath, ParamValueType, SectionOption

if TYPE_CHECKING:
    from rtbook.target import Target

__all__ = ["TARGET_SECTION", "TargetOptions", "build_target", "shared_options", "target_options"]

F = TypeVar("F", bound=Callable[..., Any])

TARGET_SECTION = "What to check"

# name -> (flag spellings, click.option keywords). The name is the keyword the command receives.
_DECLARATIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "stack": (("--stack",), {"type": InputPath("DIR"), "help": "a stack directory laid out like supabase/docker"}),
    "compose": (
        ("--compose",),
        {"type": InputPath(), "multiple": True, "help": "compose file (repeatable, base first)"},
    ),
    "env_file": (("--env", "env_file"), {"type": InputPath(), "help": "the .env file"}),
    "kong": (
        ("--kong",),
        {"type": InputPath(), "help": "kong.yml (default: volumes/api/kong.yml next to the compose file)"},
    ),
    "target": (
        ("--target",),
        {"type": click.Choice(["sandbox"]), "help": "check the running embedded sandbox"},
    ),
    "live": (("--live",), {"is_flag": True, "help": "also run the database, gateway and subscription checks"}),
    "api_url": (
        ("--api-url",),
        {"type": ParamValueType("api_url", metavar="URL"), "help": "public gateway URL, e.g. http://localhost:8000"},
    ),
    "realtime_url": (
        ("--realtime-url",),
        {
            "type": ParamValueType("realtime_url", metavar="URL"),
            "help": "Realtime reached directly, e.g. http://127.0.0.1:4000",
        },
    ),
    "realtime_host": (
        ("--realtime-host",),
        {
            "type": ParamValueType("realtime_host", metavar="HOST"),
            "help": "Host header for direct Realtime requests (carries the tenant)",
        },
    ),
    "db_url": (
        ("--db-url",),
        {
            "type": ParamValueType("db_url", metavar="URL"),
            "help": "database URL without password (password from POSTGRES_PASSWORD)",
        },
    ),
    "tenant": (
        ("--tenant",),
        {"type": ParamValueType("tenant", metavar="ID"), "help": "tenant id (default: what the stack implies)"},
    ),
    "tables": (
        ("--table", "tables"),
        {
            "multiple": True,
            "type": ParamValueType("tables", item=True, metavar="SCHEMA.TABLE"),
            "help": "schema.table to check (repeatable)",
        },
    ),
    "timeout": (
        ("--timeout",),
        {
            "type": ParamValueType(
                "timeout_s", parse=float, expected="a number of seconds (0 < t <= 3600)", metavar="SECONDS"
            ),
            "default": 10.0,
            "help": "seconds per network operation (0 < t <= 3600; default 10)",
        },
    ),
    "docker_on": (("--docker", "docker_on"), {"is_flag": True, "help": "require Docker checks"}),
    "docker_off": (("--no-docker", "docker_off"), {"is_flag": True, "help": "skip Docker checks"}),
}


@dataclass(frozen=True)
class TargetOptions:
    """The target options of one invocation, checked (see the module docstring)."""

    stack: str | None = None
    compose: tuple[str, ...] = ()
    env_file: str | None = None
    kong: str | None = None
    target: str | None = None
    live: bool = False
    api_url: str | None = None
    realtime_url: str | None = None
    realtime_host: str | None = None
    db_url: str | None = None
    tenant: str | None = None
    tables: tuple[str, ...] = ()
    timeout: float = 10.0
    docker: bool | None = None
    tenants: tuple[str, ...] = ()  # every --tenant given (only check accepts more than one)

    @classmethod
    def from_flags(cls, **flags: Any) -> TargetOptions:
        """Build from the keywords click parsed; ``--docker`` with ``--no-docker`` is a usage error."""
        docker_on, docker_off = flags.pop("docker_on", False), flags.pop("docker_off", False)
        if docker_on and docker_off:
            raise click.UsageError("--docker and --no-docker exclude each other; pass one of them")
        docker = True if docker_on else False if docker_off else None
        given = flags.pop("tenant", None)
        tenants = tuple(given) if isinstance(given, list | tuple) else ((given,) if given else ())
        return cls(docker=docker, tenant=tenants[0] if tenants else None, tenants=tenants, **flags)


def _option(name: str, section: str, *, repeatable: bool = False) -> Callable[[F], F]:
    decls, attrs = _DECLARATIONS[name]
    if repeatable:
        # The target commands take --tenant several times (check runs each); 'run' keeps one value.
        attrs = {**attrs, "multiple": True, "help": "tenant id (default: what the stack implies; check: repeatable)"}
    return click.option(*decls, cls=SectionOption, section=section, **attrs)


def shared_options(*names: str, section: str = TARGET_SECTION) -> Callable[[F], F]:
    """Add the declared options ``names`` (keys such as ``"api_url"``) to a command, in that order.

    The command receives each as a keyword of that name.
    """

    def decorate(f: F) -> F:
        for name in reversed(names):
            f = _option(name, section)(f)
        return f

    return decorate


def target_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add every target option to a command and pass them to it as ``opts: TargetOptions``."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in _DECLARATIONS}
        return f(*args, opts=TargetOptions.from_flags(**flags), **kwargs)

    for name in reversed(_DECLARATIONS):
        wrapper = _option(name, TARGET_SECTION, repeatable=name == "tenant")(wrapper)
    return wrapper


def build_target(opts: TargetOptions, lb: tuple[str, ...] = ()) -> Target:
    """Build the :class:`~rtbook.target.Target` the options describe (``lb``: the ``--lb`` files of ``check``).

    Raises:
        ConfigError: when nothing to check was given.
        InputError: when a stack file cannot be read.
    """
    from rtbook.config.stack import Stack
    from rtbook.exceptions import ConfigError
    from rtbook.target import Target

    if len(opts.tenants) > 1:
        raise click.UsageError(f"--tenant is given {len(opts.tenants)} times; only 'rtbook check' runs several "
                               "tenants: pass one --tenant")

    common: dict[str, Any] = {
        "api_url": opts.api_url,
        "realtime_url": opts.realtime_url,
        "realtime_host": opts.realtime_host,
        "db_url": opts.db_url,
        "tenant": opts.tenant,
        "tables": opts.tables,
        "timeout": opts.timeout,
    }
    if lb:
        common["lb"] = tuple(lb)
    if opts.docker is not None:
        common["docker"] = opts.docker
    if opts.target == "sandbox":
        return Target.from_sandbox(**{k: v for k, v in common.items() if v not in (None, ())})
    if opts.stack:
        stack = Stack.load(opts.stack)
    elif opts.compose:
        stack = Stack.from_files(
            [Path(c) for c in opts.compose],
            env_file=Path(opts.env_file) if opts.env_file else None,
            kong_file=Path(opts.kong) if opts.kong else None,
        )
    elif opts.api_url or opts.db_url or opts.realtime_url or lb:
        stack = None
    else:
        raise ConfigError("nothing to check: pass --stack DIR, --compose FILE, --target sandbox, --api-url URL "
                          "or --lb FILE")
    if stack is not None:
        stack.check_gateway_files()  # a FIFO or huge kong.yml is a usage error before any check runs
    return Target(name="stack" if stack else "endpoints", stack=stack, **common)
