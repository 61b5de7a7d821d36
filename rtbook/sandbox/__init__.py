"""The embedded sandbox: a throwaway PostgreSQL cluster and a Realtime-compatible server.

It depends on nothing in rtbook except :mod:`rtbook.secrets`, :mod:`rtbook.crypto` and
:mod:`rtbook.exceptions`, so the checks cannot know they are talking to a stand-in.
"""

from __future__ import annotations

from rtbook.sandbox.bootstrap import TenantLimits, bootstrap, seed_tenant
from rtbook.sandbox.postgres import PostgresCluster, free_port
from rtbook.sandbox.server_process import ServerProcess, start_server
from rtbook.sandbox.server_tenants import ServerConfig

__all__ = [
    "PostgresCluster",
    "ServerConfig",
    "ServerProcess",
    "TenantLimits",
    "bootstrap",
    "free_port",
    "seed_tenant",
    "start_server",
]
