"""The one bounded reader for every file of user input (compose, .env, kong.yml, Envoy, params, records).

Shared ground (it imports nothing of rtbook but the exceptions), so the configuration readers
(``rtbook.config``), the runbook (params, ``verify``) and the sandbox, which may not import
``rtbook.config``, read files the same way; :func:`check_yaml_shape` is the YAML guard they share.

A stack folder is user input: any of its names can be a FIFO (reading blocks forever), a device
(``/dev/zero`` never ends), a directory, a symlink loop or a 50 MB file that is not what its name
says. :func:`read_bytes` and :func:`read_text` read a file only when it is a regular file no
larger than the limit for its kind, and never block or read without bound on the way:

- the type is checked with ``stat`` before the file is opened, so a FIFO or device is never
  opened at all; the opened descriptor is checked again with ``fstat`` (the name may have been
  swapped in between) and is opened with ``O_NONBLOCK``, so even a FIFO swapped in does not block;
- symlinks are followed by the kernel, whose ``ELOOP`` is the loop guard (40 hops on Linux),
  reported as a symlink loop; ``follow_symlinks=False`` refuses a symlink outright (records);
- at most ``limit + 1`` bytes are read, whatever ``st_size`` says (a file that grows while it is
  read, or a ``/proc`` file that reports size 0, is still bounded).

Every refusal is a :class:`~rtbook.exceptions.InputFileError` whose one-line message names the
file, what was wrong and the fix; the CLI prints it and exits 2.

The limits (:data:`LIMITS`) leave about 15 times the size of the largest real file of each kind
and keep the worst case bounded (measured: a 1 MiB compose file of 18,000 services takes
``rtbook check`` 9 s and 100 MB on the loaded 2-core development machine; 4 MiB took 40 s).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from rtbook.exceptions import InputError, InputFileError

__all__ = [
    "DEFAULT_LIMIT",
    "LIMITS",
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "KiB",
    "MiB",
    "check_file",
    "check_yaml_shape",
    "describe_mode",
    "human_size",
    "read_bytes",
    "read_text",
]

KiB = 1024
MiB = 1024 * KiB

# Bytes a file of each kind may have. Keys are the words used in messages ("the compose file").
# The largest real files of the corpus: a compose file 69 KB (Coolify's template), an Envoy LDS
# 55 KB, a kong.yml 14 KB, a .env 5 KB.
LIMITS: dict[str, int] = {
    "compose file": 1 * MiB,
    "kong.yml": 1 * MiB,
    "Envoy file": 1 * MiB,
    "load-balancer config": 1 * MiB,
    "load scenario file": 64 * KiB,
    # A targets file names a few dozen targets at most (rtbook.config.targets.MAX_TARGETS), ~300 bytes each.
    "targets file": 64 * KiB,
    "env file": 256 * KiB,
    "parameters file": 256 * KiB,
    "entrypoint script": 256 * KiB,
    "Dockerfile": 256 * KiB,
    # A record is a few notebooks and summaries; anything larger was not written by rtbook.
    "record file": 64 * MiB,
}
DEFAULT_LIMIT = 1 * MiB

# Read in pieces so a file at the limit never needs a second full-size copy.
_CHUNK = 256 * 1024


def human_size(n: int) -> str:
    """``4194304`` -> ``4 MiB``; ``1536`` -> ``1.5 KiB`` (for messages)."""
    for unit, size in (("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def describe_mode(mode: int) -> str:
    """What a non-regular file is, for a message: ``a FIFO (named pipe)``, ``a directory``..."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _refuse(path: Path, kind: str, problem: str, fix: str) -> InputFileError:
    return InputFileError(f"{path}: {problem}; {fix}", path=path, kind=kind)


def _not_regular(path: Path, kind: str, mode: int) -> InputFileError:
    what = describe_mode(mode)
    if stat.S_ISDIR(mode):
        return _refuse(path, kind, f"is a directory, expected the {kind}", f"give the path of the {kind} itself")
    fix = _FIXES.get(kind, f"rtbook reads the {kind} only from a regular file (save its content to one)")
    return _refuse(path, kind, f"is {what}, not a regular file", fix)


_FIXES = {"record file": "a record holds regular files only; is this an rtbook run folder?"}


def _os_error(path: Path, kind: str, exc: OSError) -> InputFileError:
    code = exc.errno
    if code == errno.ENOENT:
        if os.path.islink(path):
            return _refuse(path, kind, f"is a symlink to {os.readlink(path)!r}, which does not exist",
                           f"point the link at the real {kind}")
        return InputFileError(f"{path}: {kind} not found", path=path, kind=kind)
    if code == errno.ELOOP:
        return _refuse(path, kind, "symlink loop (too many levels of symbolic links)",
                       f"point the link at the real {kind}")
    if code == errno.ENOTDIR:
        return _refuse(path, kind, "a folder in the path is a file", f"check the path of the {kind}")
    if code in (errno.EACCES, errno.EPERM):
        return _refuse(path, kind, f"cannot read the {kind}: permission denied",
                       "make it readable by the user running rtbook")
    if code == errno.EISDIR:
        return _refuse(path, kind, f"is a directory, expected the {kind}", f"give the path of the {kind} itself")
    return _refuse(path, kind, f"cannot read the {kind}: {exc.strerror or exc}", f"check the {kind}")


def read_bytes(path: str | Path, kind: str, *, limit: int | None = None, follow_symlinks: bool = True) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (default: :data:`LIMITS` [kind]).

    Args:
        path: the file.
        kind: what the file is, for messages and the default limit (a key of :data:`LIMITS`).
        limit: the largest size accepted, in bytes.
        follow_symlinks: False refuses a symlink (a record never holds one) instead of following it.

    Raises:
        InputFileError: missing, not a regular file (directory, FIFO, socket, device), a symlink
            loop, unreadable, or larger than the limit.
    """
    p = Path(path)
    cap = LIMITS.get(kind, DEFAULT_LIMIT) if limit is None else limit
    try:
        # stat first: a FIFO or a device is refused without being opened (opening a tty or a
        # tape has effects of its own).
        info = os.stat(p) if follow_symlinks else os.lstat(p)
    except OSError as exc:
        raise _os_error(p, kind, exc) from None
    except ValueError:  # an embedded NUL byte (a path taken from a YAML string can hold one)
        raise InputFileError(f"{str(p)!r}: the path of the {kind} contains a NUL byte; fix the path",
                             path=p, kind=kind) from None
    if not follow_symlinks and stat.S_ISLNK(info.st_mode):
        raise _refuse(p, kind, "is a symlink, not a regular file",
                      _FIXES.get(kind, f"give the path of the {kind} itself, not a link"))
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(p, kind, info.st_mode)
    if info.st_size > cap:
        raise _too_big(p, kind, info.st_size, cap)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise _os_error(p, kind, exc) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # swapped between stat and open
            raise _not_regular(p, kind, info.st_mode)
        chunks: list[bytes] = []
        total = 0
        while total <= cap:
            try:
                chunk = os.read(fd, min(_CHUNK, cap + 1 - total))
            except OSError as exc:
                raise _os_error(p, kind, exc) from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:
            raise _too_big(p, kind, max(total, info.st_size), cap, at_least=True)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_big(path: Path, kind: str, size: int, cap: int, *, at_least: bool = False) -> InputFileError:
    shown = f"more than {human_size(cap)}" if at_least else f"{human_size(size)} ({size} bytes)"
    return _refuse(path, kind, f"the {kind} is {shown}, over rtbook's {human_size(cap)} limit for it",
                   f"is this really the {kind}? (limits: README 'Limits and exit codes')")


def check_file(path: str | Path, kind: str, *, limit: int | None = None) -> None:
    """Refuse, without opening it, a ``path`` that exists but could not be read (type, loop, size).

    A missing file passes: whoever reads it later says what its absence means (a missing
    kong.yml is a finding of the ``kong.*`` checks, not a usage error).

    Raises:
        InputFileError: as :func:`read_bytes`, except for a file that does not exist.
    """
    p = Path(path)
    try:
        if not os.path.lexists(p):
            return
        info = os.stat(p)
    except OSError as exc:
        raise _os_error(p, kind, exc) from None
    except ValueError:
        return  # a NUL in the name: nothing by that name can exist
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(p, kind, info.st_mode)
    cap = LIMITS.get(kind, DEFAULT_LIMIT) if limit is None else limit
    if info.st_size > cap:
        raise _too_big(p, kind, info.st_size, cap)


def read_text(path: str | Path, kind: str, *, limit: int | None = None, follow_symlinks: bool = True) -> str:
    """:func:`read_bytes` decoded as UTF-8 text (a BOM is dropped); NUL bytes and other encodings are refused.

    Raises:
        InputFileError: as :func:`read_bytes`, or the content is binary or not UTF-8.
    """
    p = Path(path)
    data = read_bytes(p, kind, limit=limit, follow_symlinks=follow_symlinks)
    if b"\x00" in data:
        raise _refuse(p, kind, f"binary data (NUL bytes), not a text {kind}", f"is this really the {kind}?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _refuse(p, kind, f"not UTF-8 text at byte {exc.start}", f"is this really the {kind}?") from None


# ================================================================ YAML

# Aliases may add this many nodes to a document when expanded; collections may nest this deep.
# Why these numbers: rtbook/config/yamlfile.py's docstring.
MAX_ALIAS_NODES = 100_000
MAX_DEPTH = 100


def check_yaml_shape(text: str, source: str | Path) -> None:
    """Refuse a document whose aliases expand to more than :data:`MAX_ALIAS_NODES` nodes or that nests too deeply.

    One pass over the parser's events, counting the expanded size of every anchored node (a
    collection's size is one plus its children's, an alias's is its anchor's); memory is one
    number per anchor and per open collection.

    Raises:
        InputError: naming the source and the limit (a syntax error is left to the parse proper).
    """
    sizes: dict[str, int] = {}
    # One [anchor, expanded size] per open collection.
    open_nodes: list[list[Any]] = []
    added = 0
    parser = _event_parser(text)
    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_nodes) >= MAX_DEPTH:
                    raise InputError(
                        f"{source}: nested more than {MAX_DEPTH} levels deep{_at_line(event)}; "
                        "no compose, kong or Envoy file nests like this"
                    )
                open_nodes.append([event.anchor, 1])
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, size = open_nodes.pop()
            elif isinstance(event, yaml.ScalarEvent):
                anchor, size = event.anchor, 1
            elif isinstance(event, yaml.AliasEvent):
                anchor, size = None, sizes.get(event.anchor or "", 1)
                added += size
                if added > MAX_ALIAS_NODES:
                    raise InputError(
                        f"{source}: YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (alias "
                        f"*{event.anchor}{_at_line(event)}); an alias bomb, not a configuration file"
                    )
            else:
                continue
            if anchor:
                sizes[anchor] = size
            if open_nodes:
                open_nodes[-1][1] += size
    except yaml.YAMLError:
        # A syntax error: the real parse stops at the same place and words it (line, column);
        # everything before it was within the limits.
        return
    finally:
        parser.dispose()


def _at_line(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f" at line {mark.line + 1}" if mark is not None else ""


def _event_parser(text: str) -> Any:
    # libyaml's parser when PyYAML has it; only events are read, nothing is constructed.
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
