"""A real load balancer in front of the sandbox's gateways: nginx, HAProxy or Caddy from Debian's packages.

:func:`render` writes the proxy's configuration for the gateways' ports (pure text, unit-tested) and
:func:`start` runs the binary in the foreground in its own session, with every path (pid file, logs,
temporary files, Caddy's storage) inside the sandbox's run directory, and waits until it accepts
connections. All listen on 127.0.0.1.

The healthy configuration is what the guide asks of a load balancer in front of Realtime: HTTP/1.1 with
the ``Upgrade``/``Connection`` headers forwarded (nginx needs them set; HAProxy and Caddy forward upgrades
by themselves), idle/tunnel timeouts far above the clients' heartbeat (realtime-js sends one every 25 s),
no response buffering, and stickiness. Stickiness is an affinity cookie (``rtbook_node``) so that the
first contact is spread over the nodes (IP-based stickiness such as nginx ``ip_hash`` would pin every
127.0.0.1 client to one node). What stickiness does and does not do for WebSockets: a WebSocket is one
TCP connection, so the proxy keeps it on one node for its whole life whatever the policy; stickiness only
decides where a *new* request goes — long-poll fallback requests and reconnects — and it never makes
unclustered Realtime nodes share broadcasts or presence.

The variants (``no-upgrade``, ``short-timeout``, ``no-sticky``) are the break scenarios' proxies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rtbook.exceptions import ConfigError, SandboxError

__all__ = [
    "AFFINITY_COOKIE",
    "BINARIES",
    "KINDS",
    "SHORT_TIMEOUT_S",
    "VARIANTS",
    "LoadBalancer",
    "binary",
    "render",
    "start",
]

KINDS = ("nginx", "haproxy", "caddy")
BINARIES = {"nginx": "/usr/sbin/nginx", "haproxy": "/usr/sbin/haproxy", "caddy": "/usr/bin/caddy"}
VARIANTS = ("healthy", "no-upgrade", "short-timeout", "no-sticky")
AFFINITY_COOKIE = "rtbook_node"
# The broken timeout of lb-short-timeout: far below realtime-js's 25 s heartbeat (and rtbook's idle probe).
SHORT_TIMEOUT_S = 3
# The healthy idle/tunnel timeout: an hour, far above any client heartbeat.
LONG_TIMEOUT_S = 3600


@dataclass(frozen=True)
class LoadBalancer:
    """A started proxy: its kind, pid, public URL, config file and log."""

    kind: str
    pid: int
    port: int
    config: Path
    log: Path
    variant: str

    @property
    def url(self) -> str:
        """The public URL (what clients use instead of a gateway)."""
        return f"http://127.0.0.1:{self.port}"


def binary(kind: str) -> str:
    """The path of the proxy's binary (``RTBOOK_LB_<KIND>`` overrides), checked to exist."""
    if kind not in KINDS:
        raise ConfigError(f"unknown load balancer {kind!r}; choose one of {', '.join(KINDS)}")
    path = os.environ.get(f"RTBOOK_LB_{kind.upper()}") or BINARIES[kind]
    if not Path(path).is_file():
        found = shutil.which(kind)
        if found is None:
            raise SandboxError(f"{kind} is not installed ({path} does not exist); install the Debian package "
                               f"{'nginx-light' if kind == 'nginx' else kind}")
        path = found
    return path


# ------------------------------------------------------------------ configurations


def _nginx(port: int, upstreams: Sequence[int], variant: str, work: Path) -> str:
    timeout = f"{SHORT_TIMEOUT_S}s" if variant == "short-timeout" else f"{LONG_TIMEOUT_S}s"
    names = [f"node{i + 1}" for i in range(len(upstreams))]
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in upstreams)
    pairs = list(zip(names, upstreams, strict=True))
    singles = "\n".join(f"    upstream rtbook_{n} {{ server 127.0.0.1:{p}; }}" for n, p in pairs)
    pool_map = "\n".join(f"        {n} rtbook_{n};" for n in names)
    served_map = "\n".join(f"        127.0.0.1:{p} {n};" for n, p in pairs)
    if variant == "no-upgrade":
        # The classic broken block: plain proxy_pass, so nginx speaks HTTP/1.0 upstream and drops the
        # hop-by-hop Upgrade/Connection headers; the gateway sees an ordinary GET.
        upgrade = "        # (no proxy_http_version 1.1, no Upgrade/Connection headers)\n"
    else:
        upgrade = ("        proxy_http_version 1.1;\n"
                   "        proxy_set_header Upgrade $http_upgrade;\n"
                   "        proxy_set_header Connection $connection_upgrade;\n")
    if variant == "no-sticky":
        target = "rtbook_any"
        sticky = "        # no affinity: every new request is balanced round robin\n"
    else:
        # Open-source nginx has no sticky cookie: the cookie picks a one-server upstream, and the answer
        # sets it to the server that served the first contact (round robin).
        target = "$rtbook_pool"
        sticky = (f'        add_header Set-Cookie "{AFFINITY_COOKIE}=$rtbook_served_by; Path=/; HttpOnly" always;\n')
    tmp = work / "nginx-tmp"
    return f"""# Generated by rtbook sandbox ({variant}); nginx {port} -> gateways {', '.join(map(str, upstreams))}
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
# crit, not notice: nginx's 'error' lines for a failed upstream (a dead node) quote the request line
# with its query string, and the socket URL carries the apikey.
error_log {work}/nginx-error.log crit;
events {{ worker_connections 1024; }}
http {{
    # The path without the query string: the socket URL carries the apikey, which a log must not keep.
    log_format rtbook '$remote_addr [$time_local] "$request_method $uri" $status upstream=$upstream_addr';
    access_log {work}/nginx-access.log rtbook;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}
    upstream rtbook_any {{
{servers}
    }}
{singles}
    map $cookie_{AFFINITY_COOKIE} $rtbook_pool {{
        default rtbook_any;
{pool_map}
    }}
    map $upstream_addr $rtbook_served_by {{
        default "";
{served_map}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
        proxy_pass http://{target};
{upgrade}        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_read_timeout {timeout};
        proxy_send_timeout {timeout};
        proxy_buffering off;
{sticky}        }}
    }}
}}
"""


def _haproxy(port: int, upstreams: Sequence[int], variant: str, work: Path) -> str:
    tunnel = f"{SHORT_TIMEOUT_S}s" if variant == "short-timeout" else f"{LONG_TIMEOUT_S}s"
    idle = f"{SHORT_TIMEOUT_S}s" if variant == "short-timeout" else "60s"
    cookie = "" if variant == "no-sticky" else f"    cookie {AFFINITY_COOKIE} insert indirect nocache\n"
    strip = ""
    if variant == "no-upgrade":
        # HAProxy forwards upgrades by itself; this config strips them, as header-cleaning rules do.
        strip = "    http-request del-header Upgrade\n    http-request set-header Connection close\n"
    servers = "".join(
        f"    server node{i + 1} 127.0.0.1:{p}" + ("" if variant == "no-sticky" else f" cookie node{i + 1}") + "\n"
        for i, p in enumerate(upstreams)
    )
    return f"""# Generated by rtbook sandbox ({variant}); haproxy {port} -> gateways {', '.join(map(str, upstreams))}
global
    maxconn 2000
    pidfile {work}/haproxy.pid

defaults
    mode http
    option http-server-close
    timeout connect 5s
    timeout client {idle}
    timeout server {idle}
    timeout http-request 10s
    timeout tunnel {tunnel}

frontend rtbook_public
    bind 127.0.0.1:{port}
{strip}    default_backend rtbook_gateways

backend rtbook_gateways
    balance roundrobin
{cookie}{servers}"""


def _caddy(port: int, upstreams: Sequence[int], variant: str, work: Path) -> str:
    to = " ".join(f"127.0.0.1:{p}" for p in upstreams)
    lines = [f"reverse_proxy {to} {{"]
    if variant == "no-sticky":
        lines.append("        lb_policy round_robin")
    else:
        lines.append(f"        lb_policy cookie {AFFINITY_COOKIE}")
    lines.append("        flush_interval -1")
    if variant == "no-upgrade":
        # Caddy forwards upgrades by itself; this config removes the headers on the way up.
        lines += ["        header_up -Upgrade", "        header_up -Connection"]
    if variant == "short-timeout":
        # Caddy 2.6 (Debian 12) has no stream_timeout; the transport's read_timeout bounds each read from
        # the gateway, the upgraded tunnel's too, so a socket with nothing to read for that long is closed.
        lines += ["        transport http {", f"            read_timeout {SHORT_TIMEOUT_S}s", "        }"]
    lines.append("    }")
    body = "\n    ".join(lines)
    # No access log: Caddy's records the full URI, and the socket URL carries the apikey.
    return f"""# Generated by rtbook sandbox ({variant}); caddy {port} -> gateways {', '.join(map(str, upstreams))}
{{
    admin off
    auto_https off
    storage file_system {work}/caddy-data
}}

http://127.0.0.1:{port} {{
    {body}
}}
"""


_FILES = {"nginx": "nginx.conf", "haproxy": "haproxy.cfg", "caddy": "Caddyfile"}


def render(kind: str, port: int, upstreams: Sequence[int], variant: str = "healthy", work: Path | None = None) -> str:
    """The configuration text of ``kind`` listening on ``port`` in front of the gateways ``upstreams``."""
    if kind not in KINDS:
        raise ConfigError(f"unknown load balancer {kind!r}; choose one of {', '.join(KINDS)}")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown load balancer variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not upstreams:
        raise ConfigError("a load balancer needs at least one gateway to send to")
    work = (work or Path("/tmp")).resolve()
    return {"nginx": _nginx, "haproxy": _haproxy, "caddy": _caddy}[kind](port, upstreams, variant, work)


def _argv(kind: str, exe: str, config: Path) -> list[str]:
    if kind == "nginx":
        # -e: the error log before the config is read (the default path may not be writable).
        return [exe, "-c", str(config), "-p", str(config.parent), "-e", str(config.parent / "nginx-error.log")]
    if kind == "haproxy":
        return [exe, "-db", "-f", str(config)]
    return [exe, "run", "--config", str(config), "--adapter", "caddyfile"]


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def start(kind: str, port: int, upstreams: Sequence[int], work: Path, *, variant: str = "healthy",
          timeout: float = 30) -> LoadBalancer:
    """Write the configuration into ``work``, start the proxy and wait until it accepts connections.

    Raises:
        SandboxError: the binary is missing, rejected the configuration or did not listen in time
            (the message carries the last line of its log).
    """
    exe = binary(kind)
    work.mkdir(parents=True, exist_ok=True)
    (work / "nginx-tmp").mkdir(exist_ok=True)
    config = work / _FILES[kind]
    config.write_text(render(kind, port, upstreams, variant, work))
    log = work / f"{kind}.log"
    env = dict(os.environ)
    # Caddy keeps its state under XDG dirs (HOME by default): inside the sandbox, never the user's.
    env.update(XDG_DATA_HOME=str(work / "caddy-data"), XDG_CONFIG_HOME=str(work / "caddy-config"))
    with log.open("w") as log_fh:
        proc = subprocess.Popen(_argv(kind, exe, config), stdout=log_fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _accepts(port):
            return LoadBalancer(kind, proc.pid, port, config, log, variant)
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    text = log.read_text(errors="replace") if log.exists() else ""
    err = work / "nginx-error.log"
    if kind == "nginx" and err.exists():
        text += err.read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    tail = lines[-1][-300:] if lines else "no output"
    state = f"exited with {proc.returncode}" if proc.returncode is not None else f"not listening after {timeout:g} s"
    raise SandboxError(f"the {kind} load balancer {state}: {tail} (config {config}, log {log})")
