"""Kong's router as a pure function of strings: path normalisation, regex paths, expressions, priority, v0 paths.

Kong 2.8.1 (``kong/router.lua``) and 3.9.3 (``kong/router/atc.lua``, ``transform.lua``,
``utils.lua``) agree on what the official kong.yml files need, with a few version switches:

* The request path is matched after :func:`normalize_path` (``kong/tools/uri.lua`` ``normalize``
  with ``merge_slashes``): ``%XX`` of non-reserved characters decoded, dot segments removed,
  ``//`` merged. The upstream path is built from the normalised path.
* Regex paths: 2.8 treats every path with a character outside ``[A-Za-z0-9.\\-_~/%]`` as a
  regex; 3.x only paths starting with ``~``, but a ``_format_version`` ``1.1``/``2.1`` file is
  migrated on load (``migrate_path_280_300.lua``): such paths get a ``~`` prepended, plain ones
  are normalised. Either way a regex is anchored at the start of the path.
* Priority: expression routes (3.x, ``router_flavor = expressions``) outrank every ``paths``
  route; among ``paths`` routes more match criteria win (methods, hosts, headers, paths...), then
  plain hosts, regex over prefix, header count, ``regex_priority`` (regex only), and the length
  of the matched prefix (``transform.lua`` ``get_priority``; 2.8 sorts categories the same way).
* ``path_handling: v0`` joins the service path with the part after the matched prefix
  (:func:`join_v0`, ``get_upstream_uri_v0``).

Nothing here reads files; :mod:`rtbook.config.kong` builds its routes from these pieces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Expression",
    "ExpressionError",
    "PathMatcher",
    "join_v0",
    "normalize_path",
    "parse_expression",
    "path_matchers",
]

# RFC 3986 reserved characters stay percent-encoded when Kong normalises a path.
_RESERVED = set("!*'();:@&=+$,/?%#[]")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
# 2.8 router / 3.x migration: a path is a plain prefix iff it only has these characters.
_PLAIN_PATH = re.compile(r"[a-zA-Z0-9.\-_~/%]*")


def _decode(m: re.Match[str]) -> str:
    char = chr(int(m.group(1), 16))
    return m.group(0).upper() if char in _RESERVED else char


def normalize_path(path: str) -> str:
    """Kong's ``normalize(uri, true)``: decode unreserved ``%XX``, remove dot segments, merge ``//``."""
    if path in ("", "/"):
        return path
    if "%" in path:
        path = _PERCENT.sub(_decode, path)
    if "." not in path and "//" not in path:
        return path
    out: list[str] = []
    uri = path
    while uri:
        if uri == "/.":
            uri = "/"
        elif uri == "/..":
            uri = "/"
            if out:
                out.pop()
        elif uri in (".", ".."):
            uri = ""
        elif uri.startswith("../"):
            uri = uri[3:]
        elif uri.startswith("./") or uri.startswith("/./"):
            uri = uri[2:]
        elif uri.startswith("/../"):
            uri = uri[3:]
            if out:
                out.pop()
        elif uri.startswith("//"):
            uri = uri[1:]
        else:
            i = uri.find("/", 1)
            if i > 0:
                out.append(uri[:i])
                uri = uri[i:]
            else:
                out.append(uri)
                uri = ""
    return "".join(out)


@dataclass(frozen=True)
class PathMatcher:
    """One entry of a route's ``paths`` as the router uses it.

    Attributes:
        source: the path as written in kong.yml.
        value: the prefix (normalised), or the regex without its ``~``.
        regex: whether ``value`` is a regex (anchored at the start of the path).
        error: why Kong refuses this path (bad regex, or a 3.x prefix that is not normalised).
    """

    source: str
    value: str
    regex: bool
    error: str | None = None

    def match(self, path: str) -> str | None:
        """The part of ``path`` this entry matches (the prefix that ``strip_path`` removes), or None."""
        if self.error is not None:
            return None
        if self.regex:
            try:
                m = re.match(self.value, path)
            except re.error:
                return None
            return m.group(0) if m else None
        return self.value if path.startswith(self.value) else None


def path_matchers(paths: Sequence[str], major: int | None, format_version: str | None) -> tuple[PathMatcher, ...]:
    """How Kong of major version ``major`` (None: 3.x, the newest) reads the ``paths`` of a route."""
    out: list[PathMatcher] = []
    legacy_format = format_version in ("1.1", "2.1") or format_version is None
    for p in paths:
        if major == 2:
            if _PLAIN_PATH.fullmatch(p):
                out.append(PathMatcher(p, normalize_path(p), False))
            else:
                out.append(_regex(p, p))
            continue
        if legacy_format and not p.startswith("~") and not _PLAIN_PATH.fullmatch(p):
            # migrate_path_280_300: the 2.x regex gets its 3.x marker (and its %XX decoded).
            out.append(_regex(p, _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), p)))
        elif p.startswith("~"):
            out.append(_regex(p, p[1:]))
        elif legacy_format:
            out.append(PathMatcher(p, normalize_path(p), False))
        elif normalize_path(p) != p:
            better = normalize_path(p)
            out.append(PathMatcher(p, p, False, error=f"non-normalized path, consider use '{better}' instead"))
        else:
            out.append(PathMatcher(p, p, False))
    return tuple(out)


def _regex(source: str, pattern: str) -> PathMatcher:
    # Kong's regexes are PCRE (2.8) / Rust regex (3.x); named groups are written (?<name>...).
    py = pattern.replace("(?<", "(?P<").replace("(?P<=", "(?<=").replace("(?P<!", "(?<!")
    try:
        re.compile(py)
    except re.error as exc:
        return PathMatcher(source, py, True, error=f"invalid regex: '{pattern}' ({exc})")
    return PathMatcher(source, py, True)


def join_v0(base: str | None, strip_path: bool, prefix: str | None, request_path: str) -> str:
    """``path_handling: v0``: the upstream path for the (normalised) ``request_path``.

    ``base`` is the service path (None: ``/``); ``prefix`` is the part of the path the route
    matched (None when the route matched without a path).
    """
    base = base or "/"
    postfix = request_path[len(prefix or "/") :] if strip_path else ""
    if postfix in (".", ".."):
        postfix = ""
    elif postfix.startswith("./"):
        postfix = postfix[2:]
    elif postfix.startswith("../"):
        postfix = postfix[3:]
    if base.endswith("/"):
        if strip_path:
            if postfix == "":
                if base == "/":
                    return "/"
                return base if request_path.endswith("/") else base[:-1]
            if postfix.startswith("/"):
                return base[:-1] + postfix
            return base + postfix
        return base + request_path[1:]
    if strip_path:
        if postfix == "":
            return base + "/" if len(request_path) > 1 and request_path.endswith("/") else base
        if postfix.startswith("/"):
            return base + postfix
        return base + "/" + postfix
    return base if request_path == "/" else base + request_path


# ---------------------------------------------------------------------- expressions (3.x ATC)


class ExpressionError(ValueError):
    """An expression rtbook cannot read (Kong may accept it; rtbook then cannot judge the route)."""


@dataclass(frozen=True)
class Request:
    """What an expression is evaluated against."""

    path: str
    method: str = "GET"
    host: str | None = None
    headers: Mapping[str, str] | None = None


# An evaluator returns (matched, the http.path part it matched or None).
Evaluator = Callable[[Request], tuple[bool, str | None]]


@dataclass(frozen=True)
class Expression:
    """A parsed ``expression`` of a route: ``http.path``/``http.method``/``http.host``/``http.headers.*``
    predicates with ``== != ^= =^ ~ contains`` joined by ``&&``/``||``/``!``."""

    source: str
    evaluate: Evaluator

    def match(self, request: Request) -> tuple[bool, str | None]:
        """Whether the route matches, and the ``http.path`` part that matched (what strip_path removes)."""
        return self.evaluate(request)


_EXPR_TOKEN = re.compile(
    r"\s*(?:(?P<raw>r#\"(?:[^\"]|\"(?!#))*\"#)|(?P<str>\"(?:[^\"\\]|\\.)*\")|(?P<op>&&|\|\||==|!=|\^=|=\^|~|\(|\)|!)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.\-]*)|(?P<num>\d+))"
)


def parse_expression(text: str) -> Expression:
    """Parse the subset of Kong's ATC language that routes on path, method, host and headers.

    Raises:
        ExpressionError: the text uses something outside that subset.
    """
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        m = _EXPR_TOKEN.match(text, pos)
        if not m:
            raise ExpressionError(f"cannot read the expression at {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    parser = _ExprParser(tokens, text)
    evaluate = parser.or_expr()
    if parser.i != len(tokens):
        raise ExpressionError(f"unexpected {tokens[parser.i][1]!r} in the expression")
    return Expression(text, evaluate)


def _unquote(kind: str, value: str) -> str:
    if kind == "raw":
        return value[3:-2]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), value[1:-1])


class _ExprParser:
    def __init__(self, tokens: list[tuple[str, str]], text: str) -> None:
        self.tokens = tokens
        self.text = text
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ExpressionError("the expression ends too early")
        self.i += 1
        return tok

    def or_expr(self) -> Evaluator:
        left = self.and_expr()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_expr()

            def either(r: Request, a: Evaluator = left, b: Evaluator = right) -> tuple[bool, str | None]:
                ok, got = a(r)
                return (ok, got) if ok else b(r)

            left = either
        return left

    def and_expr(self) -> Evaluator:
        left = self.unary()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.unary()

            def both(r: Request, a: Evaluator = left, b: Evaluator = right) -> tuple[bool, str | None]:
                ok_a, got_a = a(r)
                if not ok_a:
                    return False, None
                ok_b, got_b = b(r)
                return (ok_b, got_a if got_a is not None else got_b) if ok_b else (False, None)

            left = both
        return left

    def unary(self) -> Evaluator:
        if self.peek() == ("op", "!"):
            self.take()
            inner = self.unary()
            return lambda r: (not inner(r)[0], None)
        if self.peek() == ("op", "("):
            self.take()
            inner = self.or_expr()
            if self.take() != ("op", ")"):
                raise ExpressionError("unbalanced parentheses")
            return inner
        return self.predicate()

    def predicate(self) -> Evaluator:
        kind, field = self.take()
        lower = False
        if (kind, field) == ("word", "lower"):
            if self.take() != ("op", "("):
                raise ExpressionError("lower( expected")
            field = self.take()[1]
            if self.take() != ("op", ")"):
                raise ExpressionError("lower(...) not closed")
            lower = True
        elif kind != "word":
            raise ExpressionError(f"a field name was expected, got {field!r}")
        op_kind, op = self.take()
        if op_kind == "word" and op in ("contains", "in"):
            if op == "in":
                raise ExpressionError("the 'in' operator is not modelled")
        elif op_kind != "op" or op not in ("==", "!=", "^=", "=^", "~"):
            raise ExpressionError(f"operator {op!r} is not modelled")
        vkind, raw = self.take()
        if vkind not in ("str", "raw"):
            raise ExpressionError(f"a string value was expected after {field} {op}")
        value = _unquote(vkind, raw)
        getter = _field_getter(field)
        is_path = field == "http.path"
        regex: re.Pattern[str] | None = None
        if op == "~":
            try:
                regex = re.compile(value.replace("(?<", "(?P<").replace("(?P<=", "(?<=").replace("(?P<!", "(?<!"))
            except re.error as exc:
                raise ExpressionError(f"invalid regex {value!r}: {exc}") from None

        def test(r: Request) -> tuple[bool, str | None]:
            got = getter(r)
            if got is None:
                return False, None
            if lower:
                got = got.lower()
            matched: str | None = None
            if op == "==":
                ok = got == value
                matched = got
            elif op == "!=":
                ok = got != value
            elif op == "^=":
                ok = got.startswith(value)
                matched = value
            elif op == "=^":
                ok = got.endswith(value)
                matched = value
            elif op == "contains":
                ok = value in got
            else:
                assert regex is not None
                m = regex.search(got)
                ok = m is not None
                matched = m.group(0) if m else None
            return ok, (matched if ok and is_path else None)

        return test


def _field_getter(field: str) -> Callable[[Request], str | None]:
    if field == "http.path":
        return lambda r: r.path
    if field == "http.method":
        return lambda r: r.method
    if field == "http.host":
        return lambda r: r.host
    if field.startswith("http.headers."):
        name = field[len("http.headers.") :].lower().replace("_", "-")
        return lambda r: (r.headers or {}).get(name)
    if field == "net.protocol":
        return lambda r: "http"
    raise ExpressionError(f"the field {field!r} is not modelled")
