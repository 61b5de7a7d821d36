"""Reading gateway files: the Realtime paths, a shape checker whose errors name the file and place, bind mounts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtbook.exceptions import InputError

if TYPE_CHECKING:
    from rtbook.config.stack import Service, Stack


REALTIME_WS_PATH = "/realtime/v1/websocket"
REALTIME_REST_PATH = "/realtime/v1/api/broadcast"
REALTIME_TENANTS_PATH = "/realtime/v1/api/tenants"
DEFAULT_REALTIME_PORT = 4000


class ConfigReader:
    """Checks the shape of one parsed gateway file; each error names the file and the place in it."""

    def __init__(self, source: str) -> None:
        """Read values of the file ``source``."""
        self.source = source

    def err(self, where: str, problem: str) -> InputError:
        """The error for ``problem`` at ``where``."""
        return InputError(f"{self.source}: {where}: {problem}")

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        """``value`` as a mapping (absent: empty)."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.err(where, f"expected a mapping, got {type(value).__name__}")
        return value

    def seq(self, value: Any, where: str) -> Sequence[Any]:
        """``value`` as a list (absent: empty)."""
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.err(where, f"expected a list, got {type(value).__name__}")
        return value

    def text(self, value: Any, where: str) -> str | None:
        """``value`` as a string (absent: None); YAML numbers count, booleans and containers do not."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.err(where, f"expected a string, got {type(value).__name__}")
        return str(value)


def volume_mounts(stack: Stack, service: Service) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts (relative sources taken from the stack's root)."""
    out: dict[str, Path] = {}
    for vol in getattr(service, "volumes", None) or ():
        source: Any = None
        target: Any = None
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) >= 2:
                source, target = parts[0], parts[1]
        elif isinstance(vol, Mapping):
            source, target = vol.get("source"), vol.get("target")
        else:
            source, target = getattr(vol, "source", None), getattr(vol, "target", None)
        if isinstance(source, str) and isinstance(target, str):
            path = Path(source)
            out[target] = path if path.is_absolute() or stack.root is None else Path(stack.root) / path
    return out
