"""Audit records: redacted notebooks, summaries, JUnit, the manifest and ``verify``."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import html
import json
import os
import re
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from rtbook.exceptions import (
    InputError,
    RtbookError,
)
from rtbook.results import Report
from rtbook.runbook.params import ParamValue, target_from_params
from rtbook.secrets import REDACTED, Redactor, is_secret_name, looks_secret

if TYPE_CHECKING:
    pass

__all__ = ['VerifyResult', 'environment_facts', 'redact_notebook', 'verify', 'write_manifest']


@dataclass
class NotebookOutcome:
    """How one notebook of a run went."""

    name: str
    status: str  # passed | failed | error
    duration_s: float
    report: Report
    error: str = ""
    error_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``summary.json``."""
        return {
            "notebook": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "error_name": self.error_name,
            "error": self.error,
            "counts": self.report.counts(),
            "results": [r.to_dict() for r in self.report],
        }


@dataclass
class RunOutcome:
    """The result of ``rtbook run``: where the record is and how each notebook went."""

    record_dir: Path
    notebooks: list[NotebookOutcome] = field(default_factory=list)
    manifest_sha256: str = ""
    interrupted: str = ""  # the signal that stopped the run (SIGINT, SIGTERM), empty for a complete run
    # check id -> ISO UTC time since when it has been failing (from the run history), for summary.html.
    since: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when every notebook passed, 1 otherwise; 130 (SIGINT) or 143 (SIGTERM) when interrupted."""
        if self.interrupted:
            from rtbook.interrupt import EXIT_CODES

            return next((code for sig, code in EXIT_CODES.items() if sig.name == self.interrupted), 130)
        return 0 if self.notebooks and all(n.status == "passed" for n in self.notebooks) else 1



def _run_redactor(params: Mapping[str, ParamValue]) -> Redactor:
    """Every secret the run could have seen: the environment's and the target stack's.

    Values are also registered HTML-escaped, because HTML outputs (result tables) escape a
    password holding ``&``, ``<`` or a quote, and the escaped form must not survive either.
    """
    redactor = Redactor()
    sources: list[Mapping[str, str]] = [os.environ]
    with contextlib.suppress(RtbookError, OSError, ImportError):
        target = target_from_params(**params)
        redactor.extend(target.redactor)
        if target.stack is not None:
            sources.append(target.stack.env)
            realtime = target.stack.realtime_service()
            if realtime is not None:
                sources.append(realtime.environment)
    for source in sources:
        redactor.add_env(source)
        for name, value in source.items():
            if isinstance(value, str) and value and (is_secret_name(name) or looks_secret(value)):
                for variant in (html.escape(value), html.escape(value, quote=False)):
                    if variant != value:
                        redactor.add(variant)
    return redactor


# ================================================================ redaction


def _path_replacements(
    staging: Path, source_dir: Path, params: Mapping[str, ParamValue] | None = None
) -> list[tuple[str, str]]:
    """Local folders a record must not name, each with what stands for it (README, "Limits and exit codes").

    The run's staging folder becomes ``.`` (the record holds its files), the notebooks' folder
    ``notebooks``, the stack directory ``<stack>``, rtbook's own source tree ``<rtbook>`` (tracebacks),
    ``$RTBOOK_HOME`` (the sandbox's state), the working directory ``.``, the temp folder ``$TMPDIR``
    (the sandbox's cluster, pytest's folders) and the home folder ``~``. Each is listed as given and
    resolved (``/tmp`` may be a symlink).
    """
    import tempfile

    named: list[tuple[str | Path, str]] = [
        (staging, "."),
        (source_dir, "notebooks"),
        (Path(__file__).resolve().parent.parent.parent, "<rtbook>"),
        (os.environ.get("RTBOOK_HOME") or Path.home() / ".cache" / "rtbook", "$RTBOOK_HOME"),
        (Path.cwd(), "."),
        (tempfile.gettempdir(), "$TMPDIR"),
        (Path.home(), "~"),
    ]
    stack = _stack_dir_of(params or {})
    if stack:
        named.append((stack, "<stack>"))
    pairs: set[tuple[str, str]] = set()
    for folder, placeholder in named:
        variants = {str(folder)}
        with contextlib.suppress(OSError, RuntimeError):
            variants.add(str(Path(folder).resolve()))
        # "/" (a home or cwd of /) would turn every absolute path into nonsense: never replaced.
        pairs |= {(v.rstrip("/"), placeholder) for v in variants if v.rstrip("/")}
    # Longest first so the staging dir wins over a temp or home dir that contains it.
    return sorted(pairs, key=lambda p: (len(p[0]), p[1]), reverse=True)


def _stack_dir_of(params: Mapping[str, ParamValue]) -> str:
    """The stack directory the run read: ``stack_dir``, or the running sandbox's (from its state file)."""
    stack_dir = str(params.get("stack_dir") or "")
    if params.get("target_kind") == "sandbox":
        with contextlib.suppress(OSError, ValueError, ImportError, RtbookError):
            from rtbook.target import sandbox_state_path

            stack_dir = str(json.loads(sandbox_state_path().read_text()).get("stack_dir") or "")
    return stack_dir


@functools.lru_cache(maxsize=8)
def _path_pattern(olds: tuple[str, ...]) -> re.Pattern[str]:
    # Whole path components only: /tmp/ab must not rewrite /tmp/abc, nor /tmp the middle of /var/tmp.
    alternatives = "|".join(re.escape(old) for old in olds)
    return re.compile(rf"(?<![\w.\-/])(?:{alternatives})(?![\w.\-])")


def _scrub_text(text: str, redactor: Redactor, paths: Sequence[tuple[str, str]]) -> str:
    if paths:
        table = dict(paths)
        # One pass, longest alternative first (paths is sorted so): a replaced path is never rewritten again.
        text = _path_pattern(tuple(old for old, _new in paths)).sub(lambda m: table[m.group(0)], text)
    return redactor.text(text)


def _scrub(value: Any, redactor: Redactor, paths: Sequence[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, redactor, paths)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            skey = _scrub_text(str(key), redactor, paths)
            out[skey] = REDACTED if isinstance(item, str) and item and is_secret_name(str(key)) else _scrub(
                item, redactor, paths
            )
        return out
    if isinstance(value, list | tuple):
        return [_scrub(v, redactor, paths) for v in value]
    return value


def redact_notebook(
    nb: Mapping[str, Any],
    redactor: Redactor,
    *,
    paths: Sequence[tuple[str, str]] = (),
    parameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a copy of notebook JSON with secrets, tokens and local paths removed everywhere.

    Cell sources, outputs (streams, rich data, tracebacks), cell and notebook metadata are all
    scrubbed. ``metadata.papermill.parameters`` is replaced by ``parameters`` (the validated,
    non-secret set) and papermill's input/output paths are reduced to file names.
    """
    data: dict[str, Any] = json.loads(json.dumps(nb))
    meta = data.setdefault("metadata", {})
    pmeta = meta.get("papermill")
    if isinstance(pmeta, dict):
        if parameters is not None:
            pmeta["parameters"] = dict(parameters)
        for key in ("input_path", "output_path"):
            if pmeta.get(key):
                pmeta[key] = Path(str(pmeta[key])).name
        pmeta.pop("environment_variables", None)
    return dict(_scrub(data, redactor, paths))


def _read_notebook(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the executed notebook {path.name}: {exc}") from exc
    return dict(data)


# ================================================================ the record


def _write_record(
    record: Path,
    outcome: RunOutcome,
    executed: Mapping[str, Any],
    staging: Path,
    source_dir: Path,
    params: Mapping[str, ParamValue],
    redactor: Redactor,
    started: dt.datetime,
    ended: dt.datetime,
    facts: Mapping[str, Any] | None = None,
    *,
    interrupted: Mapping[str, Any] | None = None,
    since: Mapping[str, str] | None = None,
) -> None:
    """Write the record; ``interrupted`` (signal, during, not_run) marks it incomplete in every summary."""
    facts = facts if facts is not None else environment_facts()
    paths = _path_replacements(staging, source_dir, params)
    safe_params = {**_scrub(dict(params), redactor, paths), "run_dir": "."}
    record.mkdir(parents=True, exist_ok=True)  # reserved (empty) by the runner

    def write(name: str, text: str) -> None:
        (record / name).write_text(_scrub_text(text, redactor, paths))

    for name, nb in executed.items():
        clean = redact_notebook(nb, redactor, paths=paths, parameters=safe_params)
        write(f"{name}.ipynb", json.dumps(clean, indent=1, ensure_ascii=False) + "\n")
    for folder in sorted(p for p in staging.iterdir() if p.is_dir() and not p.is_symlink()):
        _copy_artifacts(folder, record / folder.name, redactor, paths)
    for nb_outcome in outcome.notebooks:
        write(
            f"{nb_outcome.name}.results.json",
            json.dumps(_scrub(nb_outcome.to_dict(), redactor, paths), indent=2) + "\n",
        )
    overall = Report([r for n in outcome.notebooks for r in n.report])
    # A record cut short by SIGINT/SIGTERM says so where a reader (and 'rtbook verify') looks first.
    completeness: dict[str, Any] = {"complete": interrupted is None}
    if interrupted is not None:
        completeness["interrupted"] = dict(interrupted)
    summary = {
        "rtbook_version": _version(),
        "started": started.isoformat(timespec="seconds"),
        "ended": ended.isoformat(timespec="seconds"),
        "exit_code": outcome.exit_code,
        **completeness,
        "parameters": safe_params,
        "counts": overall.counts(),
        "notebooks": [n.to_dict() for n in outcome.notebooks],
    }
    write("summary.json", json.dumps(_scrub(summary, redactor, paths), indent=2) + "\n")
    write("summary.md", _summary_md(outcome, safe_params, started, ended, since, interrupted))
    write("summary.html", _summary_html(outcome, safe_params, started, ended, since, interrupted))
    write("junit.xml", _junit(outcome))
    manifest = {
        "format": "rtbook-record/1",
        "rtbook_version": _version(),
        "git": facts["git"],
        "python": facts["python"],
        "packages": facts["packages"],
        "parameters": safe_params,
        "started": started.isoformat(timespec="seconds"),
        "ended": ended.isoformat(timespec="seconds"),
        "exit_code": outcome.exit_code,
        **completeness,
        "target_fingerprint": _fingerprint(params),
    }
    outcome.manifest_sha256 = write_manifest(record, _scrub(manifest, redactor, paths))


# What a notebook may leave in a folder of its own beside its results (07_load/: figures, histograms).
_ARTIFACT_TEXT = frozenset({".json", ".txt", ".hlog", ".md", ".csv"})
_ARTIFACT_BINARY = frozenset({".png"})


def _copy_artifacts(src: Path, dest: Path, redactor: Redactor, paths: Any) -> None:
    """Copy a notebook's artifact folder into the record: text scrubbed like every output, images as they are.

    Only regular files of the listed kinds, each at most :data:`MAX_RECORD_FILE_BYTES`; anything
    else (links, devices, other kinds) is left out, so a record holds only what rtbook wrote.
    """
    dest.mkdir(exist_ok=True)
    for path in sorted(src.iterdir()):
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_RECORD_FILE_BYTES:
            continue
        if path.suffix in _ARTIFACT_TEXT:
            (dest / path.name).write_text(_scrub_text(path.read_text(errors="replace"), redactor, paths))
        elif path.suffix in _ARTIFACT_BINARY:
            (dest / path.name).write_bytes(path.read_bytes())


def _summary_md(
    outcome: RunOutcome, params: Mapping[str, Any], started: dt.datetime, ended: dt.datetime,
    since: Mapping[str, str] | None = None,
    interrupted: Mapping[str, Any] | None = None,
) -> str:
    """``summary.md``: root causes first, each remedy once (rtbook.report.markdown)."""
    from rtbook.report.markdown import summary_markdown

    return summary_markdown(outcome.record_dir.name, outcome.notebooks, params, started.isoformat(timespec="seconds"),
                            ended.isoformat(timespec="seconds"), outcome.exit_code, since, interrupted)


def _summary_html(
    outcome: RunOutcome, params: Mapping[str, Any], started: dt.datetime, ended: dt.datetime,
    since: Mapping[str, str] | None = None,
    interrupted: Mapping[str, Any] | None = None,
) -> str:
    """``summary.html``: self-contained, root causes, path diagram, latency chart (rtbook.report.html).

    ``since`` (check id -> "failing since" text) comes from the run history when it is known.
    """
    from rtbook.report.html import summary_html

    return summary_html(outcome.record_dir.name, outcome.notebooks, params, started.isoformat(timespec="seconds"),
                        ended.isoformat(timespec="seconds"), outcome.exit_code, since, interrupted)


def _junit(outcome: RunOutcome) -> str:
    root = ET.Element("testsuites", name="rtbook")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for n in outcome.notebooks:
        parsed = ET.fromstring(n.report.to_junit(suite=n.name).split("?>", 1)[-1])
        suite = parsed.find("testsuite")
        if suite is None:
            continue
        suite.set("name", n.name)
        if n.status in ("error", "interrupted"):
            case = ET.SubElement(suite, "testcase", classname="rtbook.runbook", name=f"{n.name}.execution")
            ET.SubElement(case, "error", message=f"{n.error_name}: {n.error}"[:500]).text = n.error
            suite.set("tests", str(int(suite.get("tests", "0")) + 1))
            suite.set("errors", str(int(suite.get("errors", "0")) + 1))
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        root.append(suite)
    for key, value in totals.items():
        root.set(key, str(value))
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _version() -> str:
    from rtbook import __version__

    return __version__


def environment_facts() -> dict[str, Any]:
    """What the manifest says about the software that ran: git commit, Python and package versions.

    The runner reads them while the kernel starts (the facts do not change during a run), so
    writing the record does not wait for two git processes and fifteen package lookups.
    """
    import platform  # here, not at the top: 'rtbook check' imports this module without writing a record

    return {"git": _git_info(), "python": platform.python_version(), "packages": _package_versions()}


def _git_info() -> dict[str, Any]:

    repo = Path(__file__).resolve().parent.parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=normal", "--", "rtbook", "notebooks"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


_PACKAGES = (
    "rtbook", "papermill", "nbformat", "nbclient", "ipykernel", "ipywidgets", "jupyterlab", "sqlalchemy",
    "psycopg", "websocket-client", "aiohttp", "docker", "pyyaml", "pyjwt", "cryptography",
)


def _package_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fingerprint(params: Mapping[str, ParamValue]) -> dict[str, Any]:
    """Hashes that identify the target without revealing it: stack files and endpoint URLs."""
    stack_dir = _stack_dir_of(params)
    files: dict[str, str] = {}
    if stack_dir and Path(stack_dir).is_dir():
        root = Path(stack_dir)
        for pattern in ("docker-compose*.yml", "docker-compose*.yaml", "compose*.yml", ".env", "volumes/api/*"):
            for path in sorted(root.glob(pattern)):
                if path.is_file():
                    files[path.relative_to(root).as_posix()] = _sha256_bytes(path.read_bytes())
    endpoints = {
        key: _sha256_bytes(str(params[key]).encode())
        for key in ("api_url", "realtime_url", "realtime_host", "db_url", "tenant")
        if params.get(key)
    }
    return {"kind": params.get("target_kind"), "stack_files_sha256": files, "endpoints_sha256": endpoints}


# ================================================================ manifest and verify

MANIFEST = "manifest.json"
_SELF_PLACEHOLDER = "0" * 64
_SELF_FIELD = re.compile(rb'"manifest_sha256": "([0-9a-f]{64})"')


# A record is a few notebooks and summaries; anything larger was not written by rtbook.
MAX_RECORD_FILE_BYTES = 64 * 1024 * 1024


def _walk(record: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """(regular files, {path: what it is} for everything else that a record never holds).

    Nothing is opened or followed here: a symlink, FIFO, socket or device is named, never read,
    so verifying a tampered record cannot block or escape the folder.
    """
    files: dict[str, Path] = {}
    odd: dict[str, str] = {}
    for path in sorted(record.rglob("*")):
        rel = path.relative_to(record).as_posix()
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            files[rel] = path
        elif not stat.S_ISDIR(mode):
            odd[rel] = _kind_of(mode)
    return files, odd


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _read_regular(path: Path, limit: int = MAX_RECORD_FILE_BYTES) -> bytes:
    """The bytes of a regular file, read without following a symlink or blocking on a FIFO (rtbook/bounded.py)."""
    from rtbook.bounded import read_bytes

    return read_bytes(path, "record file", limit=limit, follow_symlinks=False)


def _file_hashes(record: Path) -> dict[str, str]:
    files, _odd = _walk(record)
    return {rel: _sha256_bytes(_read_regular(path)) for rel, path in files.items() if rel != MANIFEST}


def write_manifest(record: Path, fields: Mapping[str, Any]) -> str:
    """Write ``manifest.json`` with the sha256 of every file in ``record`` and of itself; return the latter.

    The manifest's own hash is computed over its exact bytes with the ``manifest_sha256`` value
    zeroed, so a change to any byte of the manifest (a time, a parameter) is detected too.
    """
    body = {**fields, "files": _file_hashes(record), "manifest_sha256": _SELF_PLACEHOLDER}
    text = json.dumps(body, indent=2) + "\n"
    digest = _sha256_bytes(text.encode())
    (record / MANIFEST).write_text(text.replace(f'"manifest_sha256": "{_SELF_PLACEHOLDER}"',
                                                f'"manifest_sha256": "{digest}"'))
    return digest


@dataclass
class VerifyResult:
    """What ``verify`` found in a record."""

    record: Path
    altered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unexpected: dict[str, str] = field(default_factory=dict)
    manifest_ok: bool = True
    manifest_sha256: str = ""
    # What the manifest says about completeness: False for a run stopped by SIGINT/SIGTERM.
    complete: bool = True
    interrupted: dict[str, Any] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        """True when every file matches the manifest and the manifest matches itself."""
        return self.manifest_ok and not (self.altered or self.missing or self.extra or self.unexpected)

    def incomplete_line(self) -> str:
        """``INCOMPLETE: interrupted by SIGTERM during ...`` for a partial record, else empty."""
        if self.complete:
            return ""
        stop = self.interrupted
        return ("INCOMPLETE: the run was interrupted" + (f" by {stop['signal']}" if stop.get("signal") else "")
                + (f" during {stop['during']}" if stop.get("during") else "")
                + (f"; not run: {', '.join(map(str, stop['not_run']))}" if stop.get("not_run") else ""))

    def __str__(self) -> str:
        partial = self.incomplete_line()
        if self.intact:
            return f"{self.record}: intact (manifest sha256 {self.manifest_sha256})" + (
                f"\n  {partial}" if partial else "")
        lines = [f"{self.record}: ALTERED"] + ([f"  {partial}"] if partial else [])
        if not self.manifest_ok:
            lines.append(f"  manifest.json: its content does not match its own hash ({self.manifest_sha256 or 'none'})")
        lines += [f"  altered: {p}" for p in self.altered]
        lines += [f"  missing: {p}" for p in self.missing]
        lines += [f"  extra:   {p}" for p in self.extra]
        lines += [f"  unexpected: {p} is {kind} (a record holds regular files only)"
                  for p, kind in self.unexpected.items()]
        return "\n".join(lines)


def _completeness(result: VerifyResult, manifest: Any) -> None:
    # Records written before this field existed were always complete.
    if isinstance(manifest, dict) and manifest.get("complete") is False:
        result.complete = False
        stop = manifest.get("interrupted")
        result.interrupted = dict(stop) if isinstance(stop, dict) else {}


def verify(record: str | Path) -> VerifyResult:
    """Re-hash every file of an audit record and compare with its manifest.

    Raises:
        InputError: when the folder or its manifest cannot be read at all.
    """
    folder = Path(record)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give the run folder that 'rtbook run' printed")
    path = folder / MANIFEST
    if not os.path.lexists(path):
        raise InputError(f"{folder} has no {MANIFEST}; give the run folder that 'rtbook run' printed")
    try:
        raw = _read_regular(path)
    except InputError as exc:
        raise InputError(f"{folder} holds no readable {MANIFEST}: {exc}") from None
    result = VerifyResult(folder)
    match = _SELF_FIELD.search(raw)
    if match is None:
        result.manifest_ok = False
    else:
        result.manifest_sha256 = match.group(1).decode()
        zeroed = raw[: match.start(1)] + _SELF_PLACEHOLDER.encode() + raw[match.end(1) :]
        result.manifest_ok = _sha256_bytes(zeroed) == result.manifest_sha256
    text = raw.decode("utf-8", errors="replace")
    try:
        manifest = json.loads(text)
        listed = manifest.get("files", {})
    except (ValueError, AttributeError):
        manifest, listed = {}, {}
        result.manifest_ok = False
    _completeness(result, manifest)
    if not isinstance(listed, dict):
        listed, result.manifest_ok = {}, False
    files, result.unexpected = _walk(folder)
    actual = {rel: _sha256_bytes(_read_regular(p)) for rel, p in files.items() if rel != MANIFEST}
    for name, digest in sorted(listed.items()):
        if name not in actual:
            result.missing.append(name)
        elif actual[name] != digest:
            result.altered.append(name)
    result.extra = sorted(set(actual) - set(listed))
    return result
