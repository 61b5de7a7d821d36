"""The exceptions rtbook raises.

Checks never raise because a stack is unhealthy: they return results. Exceptions are for
misuse or misconfiguration of rtbook itself, and every message names the value it saw and
the fix.

    RtbookError
    ├── ConfigError          bad or missing parameter, flag or environment variable
    ├── InputError           a file that cannot be read or parsed (compose, .env, kong.yml)
    │   └── InputFileError   a file refused before parsing: not a regular file, a symlink loop, over its size limit
    ├── DependencyError      an optional package or binary is missing
    ├── ConnectionSetupError a connection could not be set up at all
    ├── SandboxError         the embedded sandbox could not start or stop
    ├── ChecksFailedError    raised by Report.raise_for_failures() (the notebook gate)
    └── ConfirmationRequired a write was asked for without the explicit confirmation
"""

from __future__ import annotations

__all__ = [
    "ChecksFailedError",
    "ConfigError",
    "ConfirmationRequired",
    "ConnectionSetupError",
    "DependencyError",
    "InputError",
    "InputFileError",
    "RtbookError",
    "SandboxError",
]


class RtbookError(Exception):
    """Root of every exception rtbook raises on purpose."""

    def _render_traceback_(self) -> list[str]:
        """How IPython shows this error in a notebook: one red line, the message ending with the fix, no frames.

        The message already names the value and the fix; the frames above it only push that
        sentence out of sight. The kernel still reports the exception's name and message, so
        papermill and ``rtbook run`` see the same failure.
        """
        return [f"\x1b[1;31m{type(self).__name__}\x1b[0m: {self}"]


class ConfigError(RtbookError):
    """A parameter, flag or environment variable has a value rtbook cannot use."""


class InputError(RtbookError):
    """A stack file is missing, unreadable or not what its name says it is."""


class InputFileError(InputError):
    """A file of user input refused before it is parsed (see :mod:`rtbook.bounded`).

    Attributes:
        path: the file named by the user (before symlinks are resolved).
        kind: what it should have been ("compose file", "env file"...).
    """

    def __init__(self, message: str, *, path: object = None, kind: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.kind = kind


class DependencyError(RtbookError):
    """An optional package or external binary that a feature needs is not installed."""


class ConnectionSetupError(RtbookError):
    """A connection (database, HTTP, WebSocket, Docker) could not be set up."""


class SandboxError(RtbookError):
    """The embedded sandbox could not start, answer or stop."""


class ConfirmationRequired(RtbookError):
    """A write to the user's database was requested without explicit confirmation."""


class ChecksFailedError(RtbookError):
    """One or more checks failed; raised by the notebook gate so papermill exits non-zero."""
