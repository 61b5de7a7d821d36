"""What the ``kong.*`` and ``envoy.*`` checks share: the Realtime paths, the loaded-config gate, results.

Both gateways are checked the same way: find out which gateway the stack runs, load and cache its
config once per target, and stand in a skip (or, for ``<kind>.parse``, a fail) for every check
when the config is not there or cannot be read. Only the wording and the loader differ.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from rtbook.checks._common import result
from rtbook.config.reader import DEFAULT_REALTIME_PORT
from rtbook.exceptions import InputError
from rtbook.results import CheckResult, Status

if TYPE_CHECKING:
    from rtbook.config.stack import Stack
    from rtbook.target import Target



class Loaded(Protocol):
    """What a loaded gateway config (``KongLoaded``, ``EnvoyLoaded``) has in common."""

    @property
    def config(self) -> object | None: ...

    @property
    def error(self) -> str | None: ...


L = TypeVar("L", bound=Loaded)


@dataclass(frozen=True)
class GatewayKind(Generic[L]):
    """How one gateway's checks name things and load its config.

    Attributes:
        kind: ``"kong"`` or ``"envoy"``, as :meth:`Stack.gateway_kind` says it and as the check ids start.
        title: the gateway's name in sentences.
        other: the other gateway's ``kind``, ``title`` and usual service name.
        files: what could not be read, in "Skipped: <files> could not be read".
        config: what does not load, in "Skipped: <config> does not load".
        unreadable: the summary of ``<kind>.parse`` when the files cannot be read.
        unreadable_remedy: its remedy.
        load: the loader; returns None when the stack has no such gateway, raises InputError when
            a file cannot be read.
    """

    kind: str
    title: str
    other: tuple[str, str, str]
    files: str
    config: str
    unreadable: str
    unreadable_remedy: str
    load: Callable[[Stack], L | None]

    def provider(self, need_config: bool = True) -> Callable[[Target, str], L | CheckResult]:
        """The ``using=`` provider for :func:`~rtbook.registry.register`: :meth:`context` with ``need_config``."""
        return lambda target, check_id: self.context(target, check_id, need_config)

    def context(self, target: Target, check_id: str, need_config: bool = True) -> L | CheckResult:
        """The loaded gateway config (cached on the target), or the skip/fail result that stands in for it.

        Args:
            target: the target; its stack is required (the checks declare ``needs=("stack",)``).
            check_id: the calling check, which the stand-in result carries.
            need_config: False for the checks that report on a config that does not parse.

        Returns:
            What ``self.load`` returned (a ``KongLoaded`` or ``EnvoyLoaded``), or a :class:`CheckResult`.
        """
        stack = target.stack
        assert stack is not None  # needs=("stack",)
        kind = stack.gateway_kind()
        if kind != self.kind:
            other_kind, other_title, other_service = self.other
            if kind == other_kind:
                gw = stack.gateway_service()
                return result(
                    check_id,
                    Status.SKIP,
                    f"Skipped: the stack's gateway is {other_title} (service {gw.name if gw else other_service!r}), "
                    f"not {self.title}; the {other_kind}.* checks cover it.",
                )
            return result(check_id, Status.SKIP, f"Skipped: the stack has no {self.title} gateway service.")
        key = f"{self.kind}.loaded"
        if key not in target.cache:
            try:
                target.cache[key] = self.load(stack)
            except InputError as exc:
                target.cache[key] = str(exc)
        cached: L | str | None = target.cache[key]
        parse_id = f"{self.kind}.parse"
        if isinstance(cached, str) and check_id != parse_id:
            return result(
                check_id, Status.SKIP, f"Skipped: {self.files} could not be read (see {parse_id}).", detail=cached
            )
        if isinstance(cached, str):
            return result(check_id, Status.FAIL, self.unreadable, detail=cached, remedy=self.unreadable_remedy)
        if cached is None:
            return result(check_id, Status.SKIP, f"Skipped: the stack has no {self.title} gateway service.")
        if need_config and cached.config is None:
            summary = f"Skipped: {self.config} does not load (see {parse_id})."
            return result(check_id, Status.SKIP, summary, detail=cached.error or "")
        return cached


def realtime_port(target: Target) -> int:
    """The port Realtime listens on: its ``PORT``, else 4000."""
    stack = target.stack
    service = stack.realtime_service() if stack is not None else None
    raw = service.environment.get("PORT") if service is not None else None
    return int(raw) if raw and str(raw).isdigit() else DEFAULT_REALTIME_PORT


def public_url(target: Target) -> tuple[str, str]:
    """The public URL clients use and its host name, which becomes the tenant when the gateway forwards it."""
    url = target.lookup("SUPABASE_PUBLIC_URL") or target.lookup("API_EXTERNAL_URL") or "http://localhost:8000"
    m = re.match(r"\w+://([^/:]+)", url)
    if target.tenant and target.stack is not None:
        # An added tenant of a multi-tenant stack is reached through its own public host (a hosts-matched route).
        from rtbook.config.gateway import realtime_upstream

        publics = realtime_upstream(target.stack).routed_tenants.get(target.tenant)
        if publics:
            return re.sub(r"^(\w+://)[^/:]+", lambda g: g.group(1) + publics[0], url), publics[0]
    return url, m.group(1) if m else "localhost"
