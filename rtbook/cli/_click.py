"""Click plumbing shared by every command: help in sections, commands in the order declared, typed values.

Values that are also runbook parameters (``--api-url``, ``--timeout``, ``--table``...) are checked
by the parameter schema itself (:func:`rtbook.runbook.params.check_value`), so a flag and
``-p name=value`` refuse the same values for the same reason. Errors are
:class:`click.UsageError`; :func:`rtbook.cli.main` prints them on one line and exits 2.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rtbook.exceptions import ConfigError

__all__ = [
    "CONTEXT_SETTINGS",
    "CheckPrefix",
    "InputPath",
    "NotebookList",
    "OutputDir",
    "OutputFile",
    "ParamValueType",
    "RtbookCommand",
    "RtbookGroup",
    "Seconds",
    "SectionOption",
]

if TYPE_CHECKING:
    # click 8.4 made ParamType generic; older releases (>= 8.1 is supported) cannot subscript it at run time.
    _ParamType = click.ParamType[Any]
else:
    _ParamType = click.ParamType

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

_DEFAULT_SECTION = "Options"


class SectionOption(click.Option):
    """An option listed under its own heading in ``--help`` (e.g. "What to check")."""

    def __init__(self, *args: Any, section: str = _DEFAULT_SECTION, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.section = section


def _format_sectioned_options(command: click.Command, ctx: click.Context, formatter: click.HelpFormatter) -> None:
    sections: dict[str, list[tuple[str, str]]] = {_DEFAULT_SECTION: []}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            sections.setdefault(getattr(param, "section", _DEFAULT_SECTION), []).append(record)
    for title, records in sections.items():
        if records:
            with formatter.section(title):
                formatter.write_dl(records)


def _parse_args(parse: Callable[[click.Context, list[str]], list[str]], ctx: click.Context,
                args: list[str]) -> list[str]:
    try:
        return parse(ctx, args)
    except click.UsageError as exc:
        # Some parser errors ("Option '-p' requires an argument") carry no context; the
        # one-line message points at this command's --help.
        if exc.ctx is None:
            exc.ctx = ctx
        raise


def _expand_prefixes(command: click.Command, ctx: click.Context, args: list[str], *, group: bool = False) -> list[str]:
    """Spell out unique prefixes of long options (``--list`` -> ``--list-params``), as argparse did.

    ``--`` ends the options; in a group, so does the first argument that is not an option (the
    subcommand, whose own arguments are its business).
    """
    longs = sorted({o for p in command.get_params(ctx) if isinstance(p, click.Option)
                    for o in (*p.opts, *p.secondary_opts) if o.startswith("--")})
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--" or (group and not arg.startswith("-")):
            return out + args[i:]
        name, sep, value = arg.partition("=")
        if name.startswith("--") and len(name) > 2 and name not in longs:
            matches = [o for o in longs if o.startswith(name)]
            if len(matches) > 1:
                raise click.UsageError(f"ambiguous option: {name} could match {', '.join(matches)}", ctx)
            if matches:
                arg = matches[0] + sep + value
        out.append(arg)
    return out


def _help_option(option: click.Option | None) -> click.Option | None:
    if option is not None:
        option.help = "show this help message and exit"
    return option


class RtbookCommand(click.Command):
    """A command whose ``--help`` groups options by :attr:`SectionOption.section`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse ``args`` (unique long-option prefixes allowed); a usage error always names this command."""
        return _parse_args(super().parse_args, ctx, _expand_prefixes(self, ctx, args))

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        """``-h/--help``, worded like the rest of the help."""
        return _help_option(super().get_help_option(ctx))

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write the options, one section per heading."""
        _format_sectioned_options(self, ctx, formatter)


class RtbookGroup(click.Group):
    """A group that lists its commands in the order they were added and makes ``RtbookCommand`` children."""

    command_class = RtbookCommand

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse ``args`` (unique long-option prefixes allowed); a usage error always names this group."""
        return _parse_args(super().parse_args, ctx, _expand_prefixes(self, ctx, args, group=True))

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        """``-h/--help``, worded like the rest of the help."""
        return _help_option(super().get_help_option(ctx))

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The commands in the order they were added (the help reads in workflow order)."""
        return list(self.commands)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write the options, then the commands."""
        _format_sectioned_options(self, ctx, formatter)
        self.format_commands(ctx, formatter)


RtbookGroup.group_class = RtbookGroup


def _flag_name(param: click.Parameter | None) -> str:
    """The longest spelling of a flag (``--timeout``), for messages."""
    if isinstance(param, click.Option) and param.opts:
        return max(param.opts, key=len)
    return param.human_readable_name if param is not None else "value"


class ParamValueType(_ParamType):
    """A flag value checked by the runbook parameter ``param_name`` (same rule, same message).

    Args:
        param_name: the entry of :data:`rtbook.runbook.params.PARAMS` that holds the rule.
        item: for a list parameter (``tables``), check one item per flag occurrence.
        parse: turns the text into the parameter's type (``float`` for seconds); a failure is
            reported with ``expected``.
        expected: what a valid value looks like, for the message when ``parse`` fails.
    """

    def __init__(
        self,
        param_name: str,
        *,
        item: bool = False,
        parse: Callable[[str], Any] | None = None,
        expected: str = "",
        metavar: str = "TEXT",
    ) -> None:
        self.param_name = param_name
        self.item = item
        self.parse = parse
        self.expected = expected
        self.name = metavar.lower()
        self._metavar = metavar

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """The placeholder shown in ``--help``."""
        return self._metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse ``value`` and check it against the parameter schema; UsageError naming the flag otherwise."""
        from rtbook.runbook.params import check_value

        flag = _flag_name(param)
        if isinstance(value, str) and self.parse is not None:
            try:
                value = self.parse(value)
            except ValueError:
                raise click.UsageError(f"{flag} must be {self.expected}, got {value!r}", ctx) from None
        try:
            checked = check_value(self.param_name, [value] if self.item else value, label=flag)
        except ConfigError as exc:
            raise click.UsageError(str(exc), ctx) from None
        return checked[0] if self.item and isinstance(checked, list) else checked


class Seconds(_ParamType):
    """A number of seconds ``0 < t <= high``; anything else is refused with the range (never clamped)."""

    name = "seconds"

    def __init__(self, high: float) -> None:
        self.high = high

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """The placeholder shown in ``--help``."""
        return "SECONDS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """The value as a float, or UsageError naming the flag and the range."""
        flag = _flag_name(param)
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = float("nan")
        if not 0 < seconds <= self.high:  # also refuses nan
            raise click.UsageError(
                f"{flag} must be a number of seconds between 0 and {self.high:g} (0 < t <= {self.high:g}), "
                f"got {value!r}",
                ctx,
            )
        return seconds


def _path_text(value: Any, flag: str, ctx: click.Context | None) -> str:
    text = str(value)
    if not text.strip() or "\x00" in text:
        raise click.UsageError(f"{flag} must be a path, got {text!r}", ctx)
    return text


def _writable_dir(folder: Path, flag: str, value: str, ctx: click.Context | None) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.UsageError(f"{flag} {value!r}: the folder {str(folder)!r} is not writable; choose another place",
                               ctx)


def _existing_kind(path: Path, flag: str, value: str, ctx: click.Context | None) -> int | None:
    """The mode of what ``path`` names (symlinks followed), None when nothing is there."""
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        why = "a symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise click.UsageError(f"{flag} {value!r}: {why}; choose another path", ctx) from None


class OutputFile(_ParamType):
    """A file rtbook may write a report to: checked before anything runs, so no result is lost at the end.

    An existing path must be a writable regular file; a new one needs an existing, writable folder.
    A directory, FIFO or device is refused (a FIFO without a reader would block the write; without
    ``--output`` the report goes to stdout, which is what ``/dev/stdout`` would give).
    """

    name = "file"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """The placeholder shown in ``--help``."""
        return "FILE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The path as given, or UsageError naming the flag, the path and the fix."""
        flag = _flag_name(param)
        text = _path_text(value, flag, ctx)
        path = Path(text)
        mode = _existing_kind(path, flag, text, ctx)
        if mode is None:
            target = Path(os.path.realpath(path))  # a dangling symlink is written through
            folder = target.parent
            if not folder.is_dir():
                raise click.UsageError(f"{flag} {text!r}: the folder {str(folder)!r} does not exist; create it first",
                                       ctx)
            _writable_dir(folder, flag, text, ctx)
            return text
        if stat.S_ISDIR(mode):
            raise click.UsageError(f"{flag} {text!r} is a directory; give a file name, e.g. {text.rstrip('/')}/report",
                                   ctx)
        if not stat.S_ISREG(mode):
            raise click.UsageError(
                f"{flag} {text!r} is not a regular file (a FIFO or device); give a file, or omit {flag} for stdout", ctx
            )
        try:
            # Open for writing without truncating: proves it can be written (permissions, a
            # read-only mount, /proc) before the checks run, and changes nothing.
            flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
            os.close(os.open(path, flags))
        except OSError as exc:
            raise click.UsageError(f"{flag} {text!r} cannot be written: {exc.strerror or exc}; choose another file",
                                   ctx) from None
        return text


class OutputDir(_ParamType):
    """A folder rtbook may create run folders in: an existing writable folder, or one whose nearest
    existing parent is a writable folder (it is created when the run starts)."""

    name = "dir"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """The placeholder shown in ``--help``."""
        return "DIR"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The path as given, or UsageError naming the flag, the path and the fix."""
        flag = _flag_name(param)
        text = _path_text(value, flag, ctx)
        path = Path(os.path.abspath(text))
        while True:
            mode = _existing_kind(path, flag, text, ctx)
            if mode is not None:
                break
            if path.parent == path:
                raise click.UsageError(f"{flag} {text!r}: no part of the path exists", ctx)
            path = path.parent
        if not stat.S_ISDIR(mode):
            raise click.UsageError(f"{flag} {text!r}: {str(path)!r} is a file, not a folder; choose another place",
                                   ctx)
        _writable_dir(path, flag, text, ctx)
        return text


class InputPath(_ParamType):
    """A path rtbook will read (a stack folder, a compose or env file): not empty, no NUL byte.

    Whether it exists and is a regular file within its size limit is for the reader
    (:mod:`rtbook.bounded`), whose message names the kind of file.
    """

    name = "path"

    def __init__(self, metavar: str = "FILE") -> None:
        self._metavar = metavar

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """The placeholder shown in ``--help``."""
        return self._metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The path as given, or UsageError naming the flag."""
        return _path_text(value, _flag_name(param), ctx)


class CheckPrefix(_ParamType):
    """A ``--only`` prefix that selects at least one check (a typo would otherwise run nothing and pass)."""

    name = "prefix"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """The placeholder shown in ``--help``."""
        return "PREFIX"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The prefix, or UsageError naming it and where the ids are listed."""
        from rtbook.registry import select_checks

        flag = _flag_name(param)
        text = str(value).strip()
        if not text:
            raise click.UsageError(f"{flag} needs a check id or its start, e.g. {flag} kong.", ctx)
        if not select_checks((text,)):
            raise click.UsageError(
                f"{flag} {text!r} matches no check id; 'rtbook checks' lists them (e.g. compose., kong., realtime.)",
                ctx,
            )
        return text


class NotebookList(_ParamType):
    """``--notebooks 01,03``: at least one number or name (an empty list would run nothing and report it)."""

    name = "list"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """The placeholder shown in ``--help``."""
        return "LIST"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The list as given (names are resolved by the runbook), or UsageError when it names nothing."""
        text = str(value)
        if not any(item.strip() for item in text.split(",")):
            raise click.UsageError(f"{_flag_name(param)} names no notebook, got {text!r}; e.g. 01,03", ctx)
        return text
