"""What every check module shares: the clock and the plain result constructor."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rtbook.results import CheckResult, Status

__all__ = ["now", "result"]


def now() -> float:
    """The current time; one function so that tests can pin the clock (the demo keys expire on a fixed date)."""
    return time.time()


def result(
    check_id: str,
    status: Status,
    summary: str,
    detail: str = "",
    remedy: str = "",
    evidence: Mapping[str, Any] | None = None,
) -> CheckResult:
    """A :class:`CheckResult` with the evidence copied into a plain dict."""
    return CheckResult(check_id, status, summary=summary, detail=detail, remedy=remedy, evidence=dict(evidence or {}))
