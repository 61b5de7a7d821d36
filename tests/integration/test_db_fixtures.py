"""Shared fixtures for the db.* and tenant.* integration tests: a real PostgreSQL 15 cluster.

One bootstrapped cluster per test session (roles, ``_realtime``, the ``supabase_realtime``
publication, ``public.todos``, the seeded tenant). Each test module's ``fresh`` fixture calls
:func:`reset` (seeded rows, publication and demo-table policies back to the bootstrap state), so
tests can break the database freely. Secrets are canary values that tests look for in every output.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from rtbook.remedies import CAUSES
from rtbook.results import CheckResult
from rtbook.target import Target
from tests.conftest import have_postgres, require

TENANT = "realtime-dev"
# Canaries: if one of these strings shows up in an output, a secret leaked.
JWT_CANARY = "CANARY-jwt-" + secrets.token_hex(16)
ENC_CANARY = "canary" + secrets.token_hex(5)  # 16 bytes, as DB_ENC_KEY must be
assert len(ENC_CANARY) == 16


class Lab:
    """A running cluster plus the values it was seeded with."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.password = cluster.password.reveal()

    @property
    def canaries(self) -> tuple[str, ...]:
        return (JWT_CANARY, ENC_CANARY, self.password)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "POSTGRES_PASSWORD": self.password,
            "API_JWT_SECRET": JWT_CANARY,
            "DB_ENC_KEY": ENC_CANARY,
            "DB_HOST": self.cluster.host,
            "DB_PORT": str(self.cluster.port),
            "DB_NAME": "postgres",
            "DB_USER": "supabase_admin",
            "DB_PASSWORD": self.password,
            "SELF_HOST_TENANT_NAME": TENANT,
        }
        env.update(extra)
        return env

    def target(self, **kwargs: Any) -> Target:
        env = kwargs.pop("env", None) or self.env()
        kwargs.setdefault("timeout", 5.0)
        return Target(name="test", db_url=self.cluster.url(), env=env, **kwargs)

    def sql(self, statement: str) -> None:
        self.cluster.execute(statement)

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.cluster.connect() as conn:
            # No params: send the text as is, so a literal % needs no escaping.
            cur = conn.execute(statement, params) if params else conn.execute(statement.encode())
            return list(cur.fetchall())

    def dump(self) -> list[tuple[Any, ...]]:
        """Every row of both metadata tables, in a stable order (for exact before/after comparisons)."""
        rows = self.query("SELECT 't', to_jsonb(t)::text FROM _realtime.tenants t ORDER BY id")
        rows += self.query("SELECT 'e', to_jsonb(e)::text FROM _realtime.extensions e ORDER BY id")
        return rows

    def reseed(self) -> None:
        from rtbook.sandbox.bootstrap import seed_tenant

        self.sql("DELETE FROM _realtime.tenants")
        seed_tenant(
            self.cluster, tenant=TENANT, jwt_secret=JWT_CANARY, db_enc_key=ENC_CANARY,
            db_host=self.cluster.host, db_port=str(self.cluster.port), db_name="postgres",
            db_user="supabase_admin", db_password=self.cluster.password,
        )


def finding(result: CheckResult) -> str:
    """The rtbook finding id of a result, after checking its cause is a known rtbook.remedies id."""
    assert result.cause == "" or result.cause in CAUSES, result.cause
    return str(result.evidence.get("finding", ""))


_RESET_DEMO = """
DROP TABLE IF EXISTS public.nopk;
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
    CREATE PUBLICATION supabase_realtime;
  END IF;
END $$;
ALTER PUBLICATION supabase_realtime SET TABLE public.todos;
ALTER TABLE public.todos REPLICA IDENTITY DEFAULT;
ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS todos_select_public ON public.todos;
CREATE POLICY todos_select_public ON public.todos FOR SELECT TO anon USING (owner IS NULL);
DROP POLICY IF EXISTS todos_select_own ON public.todos;
CREATE POLICY todos_select_own ON public.todos FOR SELECT TO authenticated USING (owner = auth.uid());
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active;
"""


@pytest.fixture(scope="session")
def pg_lab() -> Iterator[Lab]:
    """A bootstrapped PostgreSQL 15 cluster for the whole session."""
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    from rtbook.sandbox.bootstrap import bootstrap
    from rtbook.sandbox.postgres import PostgresCluster

    cluster = PostgresCluster()
    cluster.start()
    try:
        bootstrap(cluster, tenant=TENANT, jwt_secret=JWT_CANARY, db_enc_key=ENC_CANARY)
        yield Lab(cluster)
    finally:
        cluster.stop()


def reset(lab: Lab) -> Lab:
    """Reset the seeded tenant, the publication and the demo table; return ``lab``."""
    lab.sql(_RESET_DEMO)
    lab.reseed()
    return lab
