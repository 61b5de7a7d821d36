"""rtbook: a runbook for self-hosted Supabase Realtime.

Notebooks import from here only. Heavy modules (database, Docker, sandbox) load on first use.
"""

from __future__ import annotations

from typing import Any

from rtbook.exceptions import (
    ChecksFailedError,
    ConfigError,
    ConfirmationRequired,
    ConnectionSetupError,
    DependencyError,
    InputError,
    RtbookError,
    SandboxError,
)
from rtbook.registry import all_checks, run_checks
from rtbook.results import CheckResult, Report, Status
from rtbook.secrets import Redactor, Secret
from rtbook.target import Target

__version__ = "0.1.0"

__all__ = [
    "CheckResult",
    "ChecksFailedError",
    "ConfigError",
    "ConfirmationRequired",
    "ConnectionSetupError",
    "DependencyError",
    "InputError",
    "Redactor",
    "Report",
    "RtbookError",
    "SandboxError",
    "Secret",
    "Status",
    "Target",
    "__version__",
    "all_checks",
    "run_checks",
]


def __getattr__(name: str) -> Any:
    # Lazily expose the Stack so importing rtbook stays cheap.
    if name == "Stack":
        from rtbook.config.stack import Stack

        return Stack
    raise AttributeError(f"module 'rtbook' has no attribute {name!r}")
