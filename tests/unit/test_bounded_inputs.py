"""Bounded inputs: every file of user input is type-checked and size-limited, parsers are linear, bad input is exit 2.

Adversarial files are generated here (FIFO, /dev/zero, directory, symlink loop, a 50 MB sparse
file, the billion-laughs document, deep nesting, an unclosed quote), and hypothesis generates
.env, compose and kong.yml text: parsers raise nothing but :class:`InputError`. Every test is
bounded (pytest-timeout); a regression that blocks on a FIFO fails by timeout instead of hanging.
Anything that could exhaust memory or the C stack when the guard regresses runs in a child
process with an address-space limit.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtbook.bounded import LIMITS, MiB, check_file, human_size, read_bytes, read_text
from rtbook.cli import main
from rtbook.config.envoy import parse_envoy
from rtbook.config.kong import expand_kong_detailed, parse_kong
from rtbook.config.stack import (
    _ENV_KEY,
    Stack,
    _chain,
    _preview,
    interpolate,
    load_compose_file,
    parse_env_text,
)
from rtbook.config.yamlfile import MAX_ALIAS_NODES, MAX_DEPTH, load_yaml
from rtbook.exceptions import InputError, InputFileError
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(120)

OFFICIAL = "official/2026-09-1f37f2a"

BILLION_LAUGHS = textwrap.dedent(
    """\
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
    """
)


@pytest.fixture
def stack(corpus: Path, tmp_path: Path) -> Path:
    d = tmp_path / "stack"
    shutil.copytree(corpus / OFFICIAL, d)
    shutil.copy(d / "env.example", d / ".env")
    return d


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _loop(folder: Path, name: str) -> Path:
    (folder / f"{name}.b").symlink_to(folder / f"{name}.a")
    (folder / name).symlink_to(folder / f"{name}.b")
    (folder / f"{name}.a").symlink_to(folder / name)
    return folder / name


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as fh:
        fh.truncate(size)  # 50 MB on paper, nothing on disk: the size check must not read it
    return path


# ================================================================ the bounded reader


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda d: _fifo(d / "fifo"), "is a FIFO (named pipe), not a regular file"),
        (lambda d: Path("/dev/zero"), "is a character device, not a regular file"),
        (lambda d: (d / "dir").mkdir() or d / "dir", "is a directory"),
        (lambda d: _loop(d, "loop"), "symlink loop"),
        (lambda d: (d / "dangling").symlink_to(d / "nothing") or d / "dangling", "which does not exist"),
        (lambda d: _sparse(d / "big.yml", 50 * 1000 * 1000), "over rtbook's 1 MiB limit"),
        (lambda d: d / "missing.yml", "compose file not found"),
    ],
    ids=["fifo", "dev-zero", "directory", "symlink-loop", "dangling-symlink", "50MB", "missing"],
)
def test_reader_refuses_fast_with_one_line(tmp_path: Path, make: Callable[[Path], Path], needle: str) -> None:
    path = make(tmp_path)
    started = time.monotonic()
    with pytest.raises(InputFileError) as err:
        read_text(path, "compose file")
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert needle in message
    assert message.startswith(str(path)) and "\n" not in message
    assert err.value.kind == "compose file"


def test_reader_follows_a_symlink_chain_to_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "real.yml").write_text("services: {}\n")
    (tmp_path / "one").symlink_to(tmp_path / "real.yml")
    (tmp_path / "two").symlink_to(tmp_path / "one")
    assert read_text(tmp_path / "two", "compose file") == "services: {}\n"
    with pytest.raises(InputFileError, match="is a symlink, not a regular file"):
        read_bytes(tmp_path / "two", "record file", follow_symlinks=False)


def test_reader_limit_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert len(read_bytes(path, "env file", limit=100)) == 100
    with pytest.raises(InputFileError, match="100 bytes"):
        read_bytes(path, "env file", limit=99)


def test_reader_never_reads_past_the_limit_when_the_size_lies() -> None:
    # /proc files say st_size 0 and are as long as they are: only the read loop bounds them.
    with pytest.raises(InputFileError, match="more than 16 bytes"):
        read_bytes("/proc/self/maps", "compose file", limit=16)


def test_reader_refuses_binary_and_other_encodings(tmp_path: Path) -> None:
    (tmp_path / "nul").write_bytes(b"A=1\x00\n")
    (tmp_path / "latin1").write_bytes("A=caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputFileError, match="binary data"):
        read_text(tmp_path / "nul", "env file")
    with pytest.raises(InputFileError, match="not UTF-8 text at byte 5"):
        read_text(tmp_path / "latin1", "env file")
    (tmp_path / "bom").write_bytes(b"\xef\xbb\xbfA=1\n")
    assert read_text(tmp_path / "bom", "env file") == "A=1\n"


def test_reader_nul_in_the_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="contains a NUL byte"):
        read_text(f"{tmp_path}/a\x00b", "env file")


def test_check_file_passes_missing_and_refuses_the_rest(tmp_path: Path) -> None:
    check_file(tmp_path / "missing", "kong.yml")
    (tmp_path / "ok").write_text("x")
    check_file(tmp_path / "ok", "kong.yml")
    with pytest.raises(InputFileError, match="FIFO"):
        check_file(_fifo(tmp_path / "fifo"), "kong.yml")
    with pytest.raises(InputFileError, match="over rtbook's 1 MiB limit"):
        check_file(_sparse(tmp_path / "big", LIMITS["kong.yml"] + 1), "kong.yml")


def test_limits_are_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Limits and exit codes", 1)[1]
    for kind, limit in LIMITS.items():
        shown = human_size(limit)
        assert re.search(rf"{re.escape(kind)}[^\n]*{shown}", section), (kind, shown)


# ================================================================ YAML


def _load_in_child(path: Path, memory_mb: int = 400) -> subprocess.CompletedProcess[str]:
    """Load ``path`` with load_yaml in a child capped at ``memory_mb`` of address space."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({memory_mb} * 2**20, {memory_mb} * 2**20))
        from pathlib import Path
        from rtbook.config.yamlfile import load_yaml
        from rtbook.exceptions import InputError
        try:
            load_yaml(Path({str(path)!r}).read_text(), "doc.yml")
        except InputError as exc:
            print(exc)
            sys.exit(2)
        print("loaded")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
                          check=False)


def test_billion_laughs_is_refused_fast_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yml"
    path.write_text(BILLION_LAUGHS)
    started = time.monotonic()
    proc = _load_in_child(path)
    assert time.monotonic() - started < 30
    assert proc.returncode == 2, proc.stderr
    assert f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes" in proc.stdout


def test_deep_nesting_is_refused_without_a_crash(tmp_path: Path) -> None:
    # Without the guard libyaml's composer recurses once per level and the process segfaults.
    path = tmp_path / "deep.yml"
    path.write_text("a: " + "[" * 200_000 + "]" * 200_000 + "\n")
    proc = _load_in_child(path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])
    assert f"nested more than {MAX_DEPTH} levels deep" in proc.stdout


def test_nesting_up_to_the_limit_loads() -> None:
    depth = MAX_DEPTH - 1  # the top-level mapping is one level
    assert load_yaml("a: " + "[" * depth + "]" * depth, "x.yml") == {"a": _nested(depth)}
    with pytest.raises(InputError, match="nested more than"):
        load_yaml("a: " + "[" * (depth + 1) + "]" * (depth + 1), "x.yml")


def _nested(depth: int) -> list[object]:
    out: list[object] = []
    for _ in range(depth - 1):
        out = [out]
    return out


def test_alias_budget_counts_expanded_nodes() -> None:
    items = ", ".join(["x"] * 999)
    aliases = lambda n: "\n".join(f"k{i}: *big" for i in range(n))  # noqa: E731
    # *big is 1000 nodes (the list and its 999 items): 100 aliases add 100,000, one more is too many.
    ok = load_yaml(f"base: &big [{items}]\n{aliases(100)}\n", "x.yml")
    assert len(ok) == 101 and ok["k99"] == ["x"] * 999
    with pytest.raises(InputError, match="alias \\*big at line 102"):
        load_yaml(f"base: &big [{items}]\n{aliases(101)}\n", "x.yml")


def test_compose_merge_anchors_still_load(tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(textwrap.dedent(
        """\
        x-common: &common
          restart: unless-stopped
          environment: {A: "1"}
        services:
          one: {<<: *common, image: a}
          two: {<<: *common, image: b}
        """
    ))
    data = load_compose_file(path)
    assert data["services"]["two"] == {"restart": "unless-stopped", "environment": {"A": "1"}, "image": "b"}


def test_a_syntax_error_is_still_worded_by_the_parser() -> None:
    with pytest.raises(InputError, match=r"x.yml: YAML syntax error at line 2, column \d+"):
        load_yaml("a: [1,\nb: ]]\n", "x.yml")


# ================================================================ .env


def _reference_parse_env(text: str, source: str = ".env", environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parser before it was made linear (re-scans a quoted value on every added line): the oracle."""
    if "\x00" in text:
        raise InputError(f"{source}: binary data (NUL bytes), not an env file")
    out: dict[str, str] = {}
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        lineno = i + 1
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[7:].lstrip()
        key_match = _ENV_KEY.match(line)
        if key_match is None:
            raise InputError(f"{source}:{lineno}: expected KEY=VALUE, got {_preview(line, 12)}")
        key = key_match.group(0)
        rest = line[key_match.end():].lstrip(" \t")
        if not rest:
            if environ is not None and key in environ:
                out[key] = environ[key]
            continue
        if rest[0] not in "=":
            raise InputError(f"{source}:{lineno}: expected '=' after the name {_preview(key, 24)}, "
                             f"got {_preview(rest, 12)}")
        raw = rest[1:].lstrip(" \t")
        if raw.startswith("'"):
            end = raw.find("'", 1)
            while end < 0 and i < len(lines):
                raw += "\n" + lines[i]
                i += 1
                end = raw.find("'", 1)
            if end < 0:
                raise InputError(f"{source}:{lineno}: unterminated single quote in the value of {key}")
            out[key] = raw[1:end]
            continue
        if raw.startswith('"'):
            value = _reference_double_quoted(raw)
            while value is None and i < len(lines):
                raw += "\n" + lines[i]
                i += 1
                value = _reference_double_quoted(raw)
            if value is None:
                raise InputError(f"{source}:{lineno}: unterminated double quote in the value of {key}")
            out[key] = interpolate(value, _chain(out, environ), source=f"{source}:{lineno}")
            continue
        hash_at = re.search(r"\s#", raw)
        if hash_at:
            raw = raw[: hash_at.start()]
        out[key] = interpolate(raw.rstrip(), _chain(out, environ), source=f"{source}:{lineno}")
    return out


def _reference_double_quoted(raw: str) -> str | None:
    buf: list[str] = []
    j = 1
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}
    while j < len(raw):
        ch = raw[j]
        if ch == "\\" and j + 1 < len(raw):
            buf.append(escapes.get(raw[j + 1], "\\" + raw[j + 1]))
            j += 2
            continue
        if ch == '"':
            return "".join(buf)
        buf.append(ch)
        j += 1
    return None


def _outcome(parse: Callable[[str], dict[str, str]], text: str) -> tuple[str, object]:
    try:
        return "ok", parse(text)
    except InputError as exc:
        return "error", str(exc)


# .env-shaped text: assignments whose values are rich in quotes, escapes, newlines and '$'.
_value = st.text(alphabet=st.sampled_from(list("ab $#{}:-?+=\\'\"\n\t\r")), max_size=30)
_line = st.one_of(
    st.builds(lambda k, q, v: f"{k}={q}{v}", st.sampled_from(["A", "B_1", "export C", " D"]),
              st.sampled_from(["", "'", '"']), _value),
    st.text(max_size=20),
)
_env_text = st.lists(_line, max_size=8).map("\n".join)


@given(_env_text)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_env_parser_matches_the_reference_and_raises_only_input_error(text: str) -> None:
    assert _outcome(parse_env_text, text) == _outcome(_reference_parse_env, text)


@pytest.mark.parametrize("quote", ["'", '"'])
def test_unclosed_quote_is_linear(quote: str) -> None:
    # 1 MiB of lines after an unclosed quote (four times the .env limit): quadratic took minutes at 392 KB.
    text = f"A={quote}start\n" + "x" * 9 + ("\n" + "x" * 9) * (MiB // 10)
    started = time.monotonic()
    with pytest.raises(InputError, match=f"unterminated {'single' if quote == chr(39) else 'double'} quote"):
        parse_env_text(text)
    assert time.monotonic() - started < 10


def test_long_multiline_value_is_linear() -> None:
    body = "\\n".join(["line with \\\"escapes\\\" and $$ signs"] * 20000)
    text = f'A="{body}\n' + "more\n" * 20000 + '"\nB=after\n'
    started = time.monotonic()
    values = parse_env_text(text)
    assert time.monotonic() - started < 10
    assert values["B"] == "after" and values["A"].endswith("more\n")


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda d: _fifo(d / ".env"), "is a FIFO"),
        (lambda d: (d / ".env").mkdir(), "is a directory, expected the env file"),
        (lambda d: _loop(d, ".env"), "symlink loop"),
        (lambda d: (d / ".env").symlink_to(d / "gone"), "which does not exist"),
        (lambda d: _sparse(d / ".env", 2 * MiB), "over rtbook's 256 KiB limit"),
    ],
    ids=["fifo", "directory", "symlink-loop", "dangling", "too-big"],
)
def test_a_dotenv_that_cannot_be_read_is_an_error_never_empty(stack: Path, make: Callable[[Path], object],
                                                               needle: str) -> None:
    (stack / ".env").unlink()
    make(stack)
    with pytest.raises(InputFileError, match=needle):
        Stack.load(stack)


@pytest.mark.parametrize("spec", [":::", " : ", "::"])
def test_compose_file_naming_nothing_is_an_input_error(stack: Path, spec: str) -> None:
    with (stack / ".env").open("a") as fh:
        fh.write(f"\nCOMPOSE_FILE='{spec}'\n")
    with pytest.raises(InputError, match="names no compose file"):
        Stack.load(stack)


def test_compose_file_overlay_goes_through_the_reader(stack: Path) -> None:
    _fifo(stack / "overlay.yml")
    with (stack / ".env").open("a") as fh:
        fh.write("\nCOMPOSE_FILE=docker-compose.yml:overlay.yml\n")
    with pytest.raises(InputFileError, match=r"overlay\.yml: is a FIFO"):
        Stack.load(stack)


# ================================================================ generated compose / kong text


# YAML-shaped text: indicators, anchors, aliases, tags, merge keys and compose's own words.
_yaml_tokens = [*"ab:-[]{}&*!|>'\"#,?\n \t$%@`", "<<", "services", "!reset", "!override", "&x ", "*x", "  ",
                "\n  ", "_format_version", "routes", "paths"]
_yaml_text = st.lists(st.sampled_from(_yaml_tokens), max_size=60).map("".join)


@given(_yaml_text)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_compose_loader_raises_only_input_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(text)
    try:
        load_compose_file(path)
    except InputError as exc:
        assert "\n" not in str(exc)


# Structured documents in the shape of a kong.yml / compose file with junk in every slot, so the
# shape checks behind the YAML parse are exercised too.
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=12),
                    st.sampled_from(["/realtime/v1/", "~/realtime", "realtime", "http://realtime:4000", "${X}"]))
_keys = st.sampled_from(["_format_version", "services", "routes", "paths", "name", "url", "plugins", "config",
                         "consumers", "strip_path", "protocols", "host", "port", "image", "environment",
                         "volumes", "realtime", "kong", "expression", "hosts"])
_doc = st.recursive(_scalar, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                    st.dictionaries(_keys, kids, max_size=5)), max_leaves=25)


@given(st.one_of(_yaml_text, _doc.map(lambda d: yaml.safe_dump(d))), st.sampled_from([None, "2.8.1", "3.9.3"]))
@settings(max_examples=300, deadline=None)
def test_kong_parser_raises_only_input_error(text: str, version: str | None) -> None:
    try:
        parse_kong(text, source="kong.yml", kong_version=version)
    except InputError as exc:
        assert "\n" not in str(exc)


_envoy_keys = st.sampled_from(["resources", "@type", "name", "address", "socket_address", "port_value",
                                "filter_chains", "filters", "typed_config", "route_config", "virtual_hosts",
                                "routes", "match", "prefix", "route", "cluster", "load_assignment", "endpoints"])
_envoy_doc = st.recursive(_scalar, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                          st.dictionaries(_envoy_keys, kids, max_size=4)),
                          max_leaves=30)


@given(st.one_of(_yaml_text, _envoy_doc.map(lambda d: yaml.safe_dump({"resources": d}))),
       st.one_of(st.none(), _envoy_doc.map(lambda d: yaml.safe_dump({"resources": d}))))
@settings(max_examples=300, deadline=None)
def test_envoy_parser_raises_only_input_error(lds: str, cds: str | None) -> None:
    try:
        parse_envoy(lds, cds, sources=["lds.yaml", "cds.yaml"])
    except InputError as exc:
        assert "\n" not in str(exc)


_shell_text = st.lists(st.sampled_from([*"$'\"\\`(){}:-+?!#\n a_A1", "${", "$(", "${A:-", "${A}", "$A"]),
                       max_size=60).map("".join)


@given(_shell_text, st.sampled_from(["eval", "awk", "none"]))
@settings(max_examples=400, deadline=None)
def test_kong_expansion_raises_only_input_error(text: str, style: str) -> None:
    try:
        expand_kong_detailed(text, {"A": "x", "B": ""}, style)  # type: ignore[arg-type]
    except InputError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("unit", ["$", "${", "${A:-", '"$A', "'a\n", "\\", "a: $A\n"])
@pytest.mark.parametrize("style", ["eval", "awk"])
def test_kong_expansion_is_linear(unit: str, style: str) -> None:
    text = unit * (MiB // len(unit))  # the kong.yml limit
    started = time.monotonic()
    try:
        expand_kong_detailed(text, {"A": "x"}, style)  # type: ignore[arg-type]
    except InputError:
        pass
    assert time.monotonic() - started < 20


@given(_doc.map(lambda d: yaml.safe_dump({"services": d})))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_stack_builder_raises_only_input_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "docker-compose.yml").write_text(text)
    try:
        stack = Stack.from_files([tmp_path / "docker-compose.yml"])
        stack.check_gateway_files()
    except InputError as exc:
        assert "\n" not in str(exc)


# ================================================================ the CLI: exit 2 and one line


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _cases(stack: Path, d: Path) -> dict[str, tuple[list[str], str]]:
    compose = str(stack / "docker-compose.yml")
    (d / "bomb.yml").write_text(BILLION_LAUGHS)
    (d / "deep.yml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    _fifo(d / "fifo")
    (d / "dir").mkdir()
    _loop(d, "loop")
    _sparse(d / "big.yml", 50 * 1000 * 1000)
    cf = d / "cf"
    shutil.copytree(stack, cf)
    with (cf / ".env").open("a") as fh:
        fh.write('\nCOMPOSE_FILE=":::"\n')
    kong_fifo = d / "kongfifo"
    shutil.copytree(stack, kong_fifo)
    with (kong_fifo / ".env").open("a") as fh:  # the Kong variant of the official stack
        fh.write("\nCOMPOSE_FILE=docker-compose.yml:docker-compose.kong.yml\n")
    (kong_fifo / "volumes/api/kong.yml").unlink()
    _fifo(kong_fifo / "volumes/api/kong.yml")
    envoy_fifo = d / "envoyfifo"
    shutil.copytree(stack, envoy_fifo)
    (envoy_fifo / "volumes/api/envoy/lds.template.yaml").unlink()
    _fifo(envoy_fifo / "volumes/api/envoy/lds.template.yaml")
    env_fifo = d / "envfifo"
    shutil.copytree(stack, env_fifo)
    (env_fifo / ".env").unlink()
    _fifo(env_fifo / ".env")
    (d / "envfile.yml").write_text("services:\n  realtime:\n    image: supabase/realtime\n    env_file: /dev/zero\n")
    (d / "ctx").mkdir()
    _fifo(d / "ctx" / "Dockerfile")
    (d / "build.yml").write_text("services:\n  realtime:\n    build: ./ctx\n")
    rec = d / "rec"
    rec.mkdir()
    _fifo(rec / "manifest.json")
    return {
        "compose fifo": (["check", "--compose", str(d / "fifo")], "is a FIFO"),
        "compose dev-zero": (["check", "--compose", "/dev/zero"], "is a character device"),
        "compose directory": (["check", "--compose", str(d / "dir")], "is a directory"),
        "compose symlink loop": (["check", "--compose", str(d / "loop")], "symlink loop"),
        "compose 50MB": (["check", "--compose", str(d / "big.yml")], "over rtbook's 1 MiB limit"),
        "compose alias bomb": (["check", "--compose", str(d / "bomb.yml")], "alias bomb"),
        "compose deep": (["check", "--compose", str(d / "deep.yml")], "levels deep"),
        "compose empty path": (["check", "--compose", ""], "--compose must be a path"),
        "compose path with escapes": (["check", "--compose", str(d / "\x1b[31mred\nline")],
                                      "\\x1b[31mred\\nline: compose file not found"),
        "service env_file dev-zero": (["check", "--compose", str(d / "envfile.yml")], "/dev/zero: is a character"),
        "build Dockerfile fifo": (["check", "--compose", str(d / "build.yml")], "Dockerfile: is a FIFO"),
        "env fifo": (["check", "--compose", compose, "--env", str(d / "fifo")], "env file only from a regular file"),
        "env dev-zero": (["check", "--compose", compose, "--env", "/dev/zero"], "is a character device"),
        "kong fifo flag": (["check", "--compose", compose, "--kong", str(d / "fifo")], "kong.yml only from a regular"),
        "kong fifo in stack": (["check", "--stack", str(kong_fifo)], "kong.yml: is a FIFO"),
        "envoy fifo in stack": (["check", "--stack", str(envoy_fifo)], "lds.template.yaml: is a FIFO"),
        "stack is a fifo": (["check", "--stack", str(d / "fifo")], "not a stack directory"),
        "COMPOSE_FILE=:::": (["check", "--stack", str(cf)], "names no compose file"),
        "output directory": (["check", "--stack", str(stack), "--output", str(d)], "is a directory"),
        "output fifo": (["check", "--stack", str(stack), "--output", str(d / "fifo")], "not a regular file"),
        "output no folder": (["check", "--stack", str(stack), "--output", str(d / "no/such/r.json")],
                             "does not exist; create it first"),
        "db-url ipv6": (["check", "--db-url", "postgresql://[::1", "--live"], "Invalid IPv6 URL"),
        "db-url port": (["check", "--db-url", "postgresql://u@h:99999/db", "--live"], "Port out of range"),
        "db-url space": (["check", "--db-url", "postgresql://u@h /db", "--live"], "space or a control character"),
        "api-url no host": (["check", "--api-url", "http://", "--live"], "has no host name"),
        "realtime-host port": (["check", "--api-url", "http://127.0.0.1:9", "--realtime-host", "h:0"], "port 0"),
        "timeout range": (["check", "--stack", str(stack), "--timeout", "1e9"], "(0 < t <= 3600)"),
        "timeout nan": (["check", "--stack", str(stack), "--timeout", "nan"], "(0 < t <= 3600)"),
        "only typo": (["check", "--stack", str(stack), "--only", "kongg."], "matches no check id"),
        "run kong fifo in stack": (["run", "--stack", str(kong_fifo)], "kong.yml: is a FIFO"),
        "run env fifo in stack": (["run", "--stack", str(env_fifo)], ".env: is a FIFO"),
        "params fifo": (["run", "--params-file", str(d / "fifo")], "parameters file only from a regular file"),
        "params bomb": (["run", "--params-file", str(d / "bomb.yml")], "alias bomb"),
        "params -p port": (["run", "--stack", str(stack), "-p", "api_url=http://h:99999"], "Port out of range"),
        "cell timeout": (["run", "--stack", str(stack), "--cell-timeout", "0"], "(0 < t <= 86400)"),
        "output-dir file": (["run", "--stack", str(stack), "--output-dir", str(d / "bomb.yml")], "not a folder"),
        "notebooks empty": (["run", "--stack", str(stack), "--notebooks", ","], "names no notebook"),
        "verify fifo manifest": (["verify", str(rec)], "manifest.json: is a FIFO"),
        "sandbox dir file": (["sandbox", "up", "--dir", str(d / "bomb.yml")], "not a folder"),
    }


_CASE_NAMES = [
    "compose fifo", "compose dev-zero", "compose directory", "compose symlink loop", "compose 50MB",
    "compose alias bomb", "compose deep", "compose empty path", "compose path with escapes",
    "service env_file dev-zero", "build Dockerfile fifo", "env fifo",
    "env dev-zero", "kong fifo flag",
    "kong fifo in stack", "envoy fifo in stack", "stack is a fifo", "COMPOSE_FILE=:::", "output directory",
    "output fifo",
    "output no folder", "db-url ipv6", "db-url port", "db-url space", "api-url no host", "realtime-host port",
    "timeout range", "timeout nan", "only typo", "run kong fifo in stack", "run env fifo in stack",
    "params fifo", "params bomb", "params -p port", "cell timeout",
    "output-dir file", "notebooks empty", "verify fifo manifest", "sandbox dir file",
]


@pytest.mark.parametrize("case", _CASE_NAMES)
def test_bad_input_is_exit_2_and_one_line(stack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # 'run' would write outputs/ here if it got that far
    args, needle = _cases(stack, work)[case]
    started = time.monotonic()
    code, out, err = _run(args, capsys)
    assert time.monotonic() - started < 30
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("rtbook"), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert "\x1b" not in err  # a control character in a path cannot drive the terminal
    assert not (work / "outputs").exists()  # refused before a run folder was made


def test_case_list_covers_every_case(stack: Path, tmp_path: Path) -> None:
    assert sorted(_CASE_NAMES) == sorted(_cases(stack, tmp_path))


def test_output_is_checked_before_any_check_runs(stack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[object] = []
    import rtbook.registry

    monkeypatch.setattr(rtbook.registry, "run_checks", lambda *a, **k: ran.append(a))
    code, _, err = _run(["check", "--stack", str(stack), "--output", str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in err
    assert ran == []


def test_good_output_file_is_written(stack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "r.json"
    code, _, err = _run(["check", "--stack", str(stack), "--no-docker", "--only", "compose.", "--format", "json",
                         "--output", str(report)], capsys)
    assert code in (0, 1), err
    assert report.read_text().startswith("{")


def test_blocking_inputs_do_not_block_the_cli_process(tmp_path: Path) -> None:
    # The same FIFO as above, through the real console entry point in its own process: the
    # strongest form of "never blocks" (a regression hangs the child, which the timeout kills).
    fifo = _fifo(tmp_path / "fifo")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "rtbook", "check", "--compose", str(fifo)], capture_output=True,
                          text=True, timeout=60, env=env, check=False,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "is a FIFO" in proc.stderr


# ================================================================ the sandbox reads the same way


def test_sandbox_gateway_refuses_an_alias_bomb_and_a_fifo(tmp_path: Path) -> None:
    from rtbook.sandbox.gateway import GatewayConfig, GatewayConfigError
    from rtbook.sandbox.gateway import parse_kong as sandbox_parse_kong

    with pytest.raises(GatewayConfigError, match="alias bomb"):
        sandbox_parse_kong(BILLION_LAUGHS)
    config = GatewayConfig.from_mapping({"kong_yml": str(_fifo(tmp_path / "kong.yml")), "env": {}})
    with pytest.raises(GatewayConfigError, match="is a FIFO"):
        config.load_kong()


def test_sandbox_stack_files_are_read_bounded(tmp_path: Path) -> None:
    from rtbook.exceptions import SandboxError
    from rtbook.sandbox.stackdir import load_compose, read_env

    with pytest.raises(SandboxError, match="is a FIFO"):
        read_env(_fifo(tmp_path / ".env"))
    with pytest.raises(SandboxError, match="is a character device"):
        load_compose(Path("/dev/zero"))
    (tmp_path / "bomb.yml").write_text(BILLION_LAUGHS)
    with pytest.raises(SandboxError, match="alias bomb"):
        load_compose(tmp_path / "bomb.yml")


def test_a_fifo_swapped_in_after_the_type_check_neither_blocks_nor_is_read(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The name is checked with stat, then opened: simulate the swap by letting that stat see a
    # regular file while the name is a FIFO. O_NONBLOCK keeps the open from waiting for a writer
    # and fstat on the descriptor refuses it.
    import rtbook.bounded

    regular = tmp_path / "regular"
    regular.write_text("x")
    fifo = _fifo(tmp_path / "fifo")
    real_stat = os.stat
    monkeypatch.setattr(rtbook.bounded.os, "stat",
                        lambda p, *a, **k: real_stat(regular) if Path(p) == fifo else real_stat(p, *a, **k))
    with pytest.raises(InputFileError, match="is a FIFO"):
        read_bytes(fifo, "compose file")


def test_an_unexpected_error_is_one_line_and_a_traceback_only_with_debug(
        stack: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import rtbook.registry

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(rtbook.registry, "run_checks", boom)
    monkeypatch.delenv("RTBOOK_DEBUG", raising=False)
    code, out, err = _run(["check", "--stack", str(stack)], capsys)
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "rtbook: internal error: RuntimeError: boom second line (a bug in rtbook; rerun with --debug for the traceback)"
    ]
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "check", "--stack", str(stack)])
    monkeypatch.setenv("RTBOOK_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["check", "--stack", str(stack)])
