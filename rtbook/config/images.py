"""Image references (``registry/repository:tag@digest``): the one parser for repositories, tags and versions."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ImageVersion", "image_repository", "image_tag", "parse_version"]

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def _split(image: str) -> tuple[str, str]:
    """(reference without tag or digest, tag); a ``:`` before the last ``/`` is a registry port, not a tag."""
    ref = image.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
    else:
        tag = ""
    return (f"{head}/{last}" if head else last), tag


def image_tag(image: str) -> str:
    """The tag of an image reference (``v2.34.47``), or ``""`` when it has none."""
    return _split(image)[1]


def image_repository(image: str) -> str:
    """The repository part of an image reference, without registry host, tag or digest.

    ``public.ecr.aws/supabase/realtime:v2.34.47`` gives ``supabase/realtime``;
    ``kong:2.8.1`` gives ``kong``; ``docker.io/library/kong`` gives ``kong``.
    """
    parts = _split(image)[0].split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts and parts[0] == "library" and len(parts) == 2:
        parts = parts[1:]
    return "/".join(parts)


@dataclass(frozen=True)
class ImageVersion:
    """The version parsed from an image reference's tag."""

    image: str
    version: tuple[int, int, int] | None

    @property
    def known(self) -> bool:
        """True when the tag gave a version number."""
        return self.version is not None

    def at_least(self, other: tuple[int, int, int]) -> bool:
        """True when this version is ``other`` or later; an unknown tag counts as the newest."""
        return self.version is None or self.version >= other

    def describe(self) -> str:
        """``supabase/realtime:v2.78.15`` or a note that the version is assumed to be the newest."""
        if self.version is not None:
            plain = "v" + ".".join(map(str, self.version))
            return self.image if self.image.endswith((plain, plain[1:])) else f"{self.image} ({plain})"
        return f"{self.image or 'an unknown image'} (version unknown: assumed to be the newest)"


def parse_version(image: str | None) -> ImageVersion:
    """Parse ``supabase/realtime:vX.Y.Z`` (any registry prefix, optional digest)."""
    image = image or ""
    m = _VERSION.match(image_tag(image))
    if not m:
        return ImageVersion(image, None)
    return ImageVersion(image, (int(m.group(1)), int(m.group(2)), int(m.group(3))))
