"""The target options every command shares (``--stack``, ``--api-url``, ``--db-url``...), declared once."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["_add_target_args", "build_target"]


def _add_target_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to check")
    g.add_argument("--stack", metavar="DIR", help="a stack directory laid out like supabase/docker")
    g.add_argument("--compose", metavar="FILE", action="append", help="compose file (repeatable, base first)")
    g.add_argument("--env", metavar="FILE", dest="env_file", help="the .env file")
    g.add_argument("--kong", metavar="FILE", help="kong.yml (default: volumes/api/kong.yml next to the compose file)")
    g.add_argument("--target", choices=["sandbox"], help="check the running embedded sandbox")
    g.add_argument("--live", action="store_true", help="also run the database, gateway and subscription checks")
    g.add_argument("--api-url", help="public gateway URL, e.g. http://localhost:8000")
    g.add_argument("--realtime-url", help="Realtime reached directly, e.g. http://127.0.0.1:4000")
    g.add_argument("--realtime-host", help="Host header for direct Realtime requests (carries the tenant)")
    g.add_argument("--db-url", help="database URL without password (password from POSTGRES_PASSWORD)")
    g.add_argument("--tenant", help="tenant id (default: what the stack implies)")
    g.add_argument("--table", action="append", default=[], help="schema.table to check (repeatable)")
    g.add_argument("--timeout", type=float, default=10.0, help="seconds per network operation")
    docker = g.add_mutually_exclusive_group()
    docker.add_argument("--docker", dest="docker", action="store_true", default=None, help="require Docker checks")
    docker.add_argument("--no-docker", dest="docker", action="store_false", help="skip Docker checks")


def build_target(args: argparse.Namespace) -> object:
    """Build a :class:`~rtbook.target.Target` from parsed CLI flags."""
    from rtbook.config.stack import Stack
    from rtbook.exceptions import ConfigError
    from rtbook.target import Target

    common = {
        "api_url": args.api_url,
        "realtime_url": args.realtime_url,
        "realtime_host": args.realtime_host,
        "db_url": args.db_url,
        "tenant": args.tenant,
        "tables": tuple(args.table),
        "timeout": args.timeout,
    }
    if args.docker is not None:
        common["docker"] = args.docker
    if args.target == "sandbox":
        return Target.from_sandbox(**{k: v for k, v in common.items() if v not in (None, ())})
    if args.stack:
        stack = Stack.load(args.stack)
    elif args.compose:
        stack = Stack.from_files(
            [Path(c) for c in args.compose],
            env_file=Path(args.env_file) if args.env_file else None,
            kong_file=Path(args.kong) if args.kong else None,
        )
    elif args.api_url or args.db_url or args.realtime_url:
        stack = None
    else:
        raise ConfigError("nothing to check: pass --stack DIR, --compose FILE, --target sandbox or --api-url URL")
    if args.docker is None and not args.live:
        common["docker"] = None
    return Target(name="stack" if stack else "endpoints", stack=stack, **common)  # type: ignore[arg-type]
