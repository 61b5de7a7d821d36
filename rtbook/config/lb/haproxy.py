"""HAProxy configs: sections (``global``, ``defaults``, ``frontend``, ``backend``, ``listen``) of one-line directives.

HAProxy (2.x, ``mode http``) forwards ``Upgrade`` and speaks HTTP/1.1 on its own, so the
WebSocket-relevant settings are timeouts: once a connection is upgraded, ``timeout tunnel``
applies when set, otherwise ``timeout client`` and ``timeout server`` do (HAProxy manual
"timeout tunnel"). A section inherits every ``timeout`` of the ``defaults`` section above it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from rtbook.config.lb import Health, LbConfig, LbRoute, Setting, Sticky, parse_duration
from rtbook.exceptions import InputError

__all__ = ["parse"]

_SECTIONS = ("global", "defaults", "frontend", "backend", "listen", "resolvers", "peers", "userlist", "program",
             "http-errors", "ring", "cache", "mailers")


@dataclass
class _Section:
    kind: str
    name: str
    line: int
    lines: list[tuple[int, list[str]]] = field(default_factory=list)
    defaults: _Section | None = None

    def all(self, *head: str) -> list[tuple[int, list[str]]]:
        return [(n, w) for n, w in self.lines if w[: len(head)] == list(head)]

    def first(self, *head: str) -> tuple[int, list[str]] | None:
        found = self.all(*head)
        return found[-1] if found else None  # the last one wins in HAProxy


def _split(line: str) -> list[str]:
    line = re.sub(r"(^|\s)#.*$", "", line).strip()
    if not line:
        return []
    try:
        return shlex.split(line, posix=True)
    except ValueError:
        return line.split()


def read_sections(text: str, source: str) -> list[_Section]:
    """The sections of a HAProxy config, each with its directives and line numbers."""
    sections: list[_Section] = []
    current: _Section | None = None
    last_defaults: _Section | None = None
    for n, raw in enumerate(text.splitlines(), start=1):
        words = _split(raw)
        if not words:
            continue
        if words[0] in _SECTIONS and not raw[:1].isspace():
            current = _Section(words[0], words[1] if len(words) > 1 else "", n, defaults=last_defaults)
            sections.append(current)
            if words[0] == "defaults":
                last_defaults = current
            continue
        if current is None:
            raise InputError(f"{source}:{n}: directive {words[0]!r} outside any section; HAProxy configs start with "
                             "'global', 'defaults', 'frontend', 'backend' or 'listen'")
        current.lines.append((n, words))
    return sections


def _setting(sec: _Section, source: str, *head: str) -> Setting | None:
    """A directive of the section or, failing that, of its defaults section."""
    for s in (sec, sec.defaults):
        if s is None:
            continue
        found = s.first(*head)
        if found is not None:
            n, words = found
            value = words[len(head)] if len(words) > len(head) else ""
            return Setting(" ".join(head), value, f"{source}:{n}", parse_duration(value, "ms"))
    return None


def parse(path: Path, text: str) -> LbConfig:
    """Parse a haproxy.cfg into an :class:`LbConfig`."""
    source = str(path)
    sections = read_sections(text, source)
    backends = {s.name: s for s in sections if s.kind in ("backend", "listen")}
    routes: list[LbRoute] = []
    for front in (s for s in sections if s.kind in ("frontend", "listen")):
        tls = any("ssl" in w for _, w in front.all("bind"))
        acls: dict[str, list[str]] = {}
        for _, w in front.all("acl"):
            if len(w) >= 4 and w[2] in ("path_beg", "path", "path_reg", "path_dir"):
                acls.setdefault(w[1], []).extend(_acl_prefixes(w[2], w[3:]))
        rules: list[tuple[int, str, tuple[str, ...]]] = []
        for n, w in front.all("use_backend"):
            paths = _condition_paths(w[2:], acls)
            rules.append((n, w[1], paths))
        default = front.first("default_backend")
        if default is not None:
            rules.append((default[0], default[1][1], ("/",)))
        if front.kind == "listen":
            rules.append((front.line, front.name, ("/",)))
        group = f"{front.kind} {front.name} ({source}:{front.line})"
        for index, (n, name, paths) in enumerate(rules):
            back = backends.get(name)
            if back is None:
                continue
            routes.append(_route(front, back, source, group, n, paths, tls, -index))
    return LbConfig("haproxy", source, (source,), tuple(routes), parser="rtbook HAProxy section reader")


def _acl_prefixes(fetch: str, values: list[str]) -> list[str]:
    out = []
    for v in values:
        if v.startswith("-"):
            continue
        if fetch == "path_reg":
            m = re.match(r"\^?((?:[\w/.-]|\\.)*)", v)
            out.append(m.group(1).replace("\\", "") if m else "")
        else:
            out.append(v)
    return out


def _condition_paths(words: list[str], acls: dict[str, list[str]]) -> tuple[str, ...]:
    """The path prefixes a ``use_backend ... if <cond>`` matches (``/`` when the condition is not about paths)."""
    if not words or words[0] not in ("if", "unless") or words[0] == "unless":
        return ("/",)
    paths: list[str] = []
    inline = " ".join(words[1:])
    for m in re.finditer(r"\{\s*(path_beg|path|path_dir|path_reg)\s+([^}]+)\}", inline):
        paths.extend(_acl_prefixes(m.group(1), m.group(2).split()))
    for w in words[1:]:
        if w in acls:
            paths.extend(acls[w])
    return tuple(paths) if paths else ("/",)


def _route(front: _Section, back: _Section, source: str, group: str, line: int, paths: tuple[str, ...],
           tls: bool, priority: float) -> LbRoute:
    timeouts: list[Setting] = []
    tunnel = _setting(back, source, "timeout", "tunnel")
    if tunnel is not None:
        timeouts.append(tunnel)
    else:
        for sec, name in ((front, "client"), (back, "server")):
            found = _setting(sec, source, "timeout", name)
            timeouts.append(found or Setting(f"timeout {name}", "unset", "HAProxy default: no timeout", None))
    sticky = None
    balance = back.first("balance")
    if balance is not None and balance[1][1:2] and balance[1][1] in ("source", "hdr", "url_param", "uri"):
        sticky = Sticky(f"balance {' '.join(balance[1][1:])}", f"{source}:{balance[0]}")
    for n, w in back.all("cookie"):
        sticky = Sticky(" ".join(w), f"{source}:{n}", detail="cookie")
    for n, w in back.all("stick"):
        sticky = Sticky(" ".join(w), f"{source}:{n}", detail="stick-table")
    servers = tuple(w[2] for _, w in back.all("server") if len(w) >= 3)
    checked = any("check" in w[3:] for _, w in back.all("server"))
    health = None
    if checked:
        path_ = "(TCP connect only)"
        where = f"{source}:{back.line}"
        httpchk = back.first("option", "httpchk")
        if httpchk is not None:
            words = httpchk[1][2:]
            path_ = words[1] if len(words) >= 2 else (words[0] if words and words[0].startswith("/") else "/")
            where = f"{source}:{httpchk[0]}"
        headers: list[str] = []
        for n, w in back.all("http-check", "send"):
            if "uri" in w:
                path_ = w[w.index("uri") + 1]
                where = f"{source}:{n}"
            headers += [w[i + 1].lower() for i, x in enumerate(w[:-1]) if x == "hdr"]
        expect = back.first("http-check", "expect")
        health = Health(path_, where, expect=" ".join(expect[1][2:]) if expect else "status 2xx/3xx (HAProxy default)",
                        headers=tuple(headers))
    mode = _setting(back, source, "mode") or _setting(front, source, "mode")
    scheme = "https" if any("ssl" in w[3:] for _, w in back.all("server")) else "http"
    return LbRoute(
        name=f"{front.kind} {front.name} → backend {back.name}",
        where=f"{source}:{line}",
        group=group,
        priority=priority,
        paths=paths,
        upstream=back.name,
        servers=servers,
        http11=None,
        upgrade=None,
        timeouts=tuple(timeouts),
        sticky=sticky,
        health=health,
        tls_listener=tls,
        backend_scheme=scheme,
        notes=(f"backend at {source}:{back.line}", f"mode {mode.value if mode else 'tcp (HAProxy default)'}"),
    )
