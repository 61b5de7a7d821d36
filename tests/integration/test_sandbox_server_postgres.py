"""The sandbox's throwaway cluster and bootstrap: roles, _realtime schema, seed, RLS on the demo table."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import psycopg
import pytest

from rtbook.crypto import decrypt
from rtbook.sandbox import PostgresCluster, bootstrap, seed_tenant
from rtbook.sandbox.bootstrap import migrations_for, realtime_schema_sql
from tests.conftest import have_postgres, require

pytestmark = [pytest.mark.postgres]

CANARY_JWT = "canary-jwt-secret-0123456789-abcdefghijklmnop"
USER_A = "11111111-1111-1111-1111-111111111111"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    c = PostgresCluster()
    c.start()
    try:
        bootstrap(c, jwt_secret=CANARY_JWT)
        yield c
    finally:
        c.stop()


def test_cluster_settings_and_auth(cluster: PostgresCluster) -> None:
    with cluster.connect() as conn:
        assert conn.execute("show wal_level").fetchone() == ("logical",)
        assert conn.execute("show listen_addresses").fetchone() == ("127.0.0.1",)
    # TCP needs the password: a wrong one is refused.
    bad = f"host=127.0.0.1 port={cluster.port} user=supabase_admin dbname=postgres password=wrong connect_timeout=5"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bad)
    assert cluster.password.reveal() not in repr(cluster)
    assert cluster.password.reveal() not in cluster.url()
    assert cluster.password.reveal() in cluster.url(with_password=True) or "%" in cluster.url(with_password=True)


def test_roles(cluster: PostgresCluster) -> None:
    with cluster.connect() as conn:
        rows = dict(
            (r[0], r[1:])
            for r in conn.execute(
                "select rolname, rolsuper, rolcanlogin, rolreplication, rolbypassrls from pg_roles"
            ).fetchall()
        )
    assert rows["supabase_admin"] == (True, True, True, True)
    assert rows["anon"][1] is False and rows["authenticated"][1] is False
    assert rows["service_role"][3] is True
    assert rows["authenticator"][1] is True
    with psycopg.connect(cluster.conninfo("authenticator")) as conn:
        conn.execute("set role authenticated")


def test_realtime_schema_and_seed(cluster: PostgresCluster) -> None:
    with cluster.connect() as conn:
        assert conn.execute("select count(*) from _realtime.schema_migrations").fetchone() == (30,)
        tenants = conn.execute("select external_id, jwt_secret, max_concurrent_users from _realtime.tenants").fetchall()
        assert len(tenants) == 1
        ext, cipher, max_users = tenants[0]
        assert ext == "realtime-dev" and max_users == 200
        assert cipher != CANARY_JWT and decrypt(cipher, "supabaserealtime") == CANARY_JWT
        exts = conn.execute("select type, settings from _realtime.extensions").fetchall()
        assert [e[0] for e in exts] == ["postgres_cdc_rls"]
        settings = exts[0][1]
        assert decrypt(settings["db_port"], "supabaserealtime") == str(cluster.port)
        assert decrypt(settings["db_host"], "supabaserealtime") == "127.0.0.1"
        assert decrypt(settings["db_password"], "supabaserealtime") == cluster.password.reveal()
        assert settings["region"] == "us-east-1" and settings["publication"] == "supabase_realtime"
        pub = conn.execute("select schemaname, tablename from pg_publication_tables").fetchall()
        assert pub == [("public", "todos")]
        first_id = conn.execute("select id from _realtime.tenants").fetchone()
    # re-seeding replaces the tenant (new id) and keeps exactly one extension row
    seed_tenant(cluster, jwt_secret=CANARY_JWT, db_port=cluster.port)
    with cluster.connect() as conn:
        assert conn.execute("select id from _realtime.tenants").fetchone() != first_id
        assert conn.execute("select count(*) from _realtime.extensions").fetchone() == (1,)


def test_bootstrap_twice_is_safe(cluster: PostgresCluster) -> None:
    bootstrap(cluster, jwt_secret=CANARY_JWT)
    with cluster.connect() as conn:
        assert conn.execute("select count(*) from _realtime.tenants").fetchone() == (1,)
        assert conn.execute("select count(*) from _realtime.schema_migrations").fetchone() == (30,)
        assert conn.execute("select count(*) from pg_publication_tables").fetchone() == (1,)


def test_schema_follows_image_version() -> None:
    assert len(migrations_for("2.34.47")) == 21
    assert len(migrations_for("2.78.15")) == 30
    assert len(migrations_for("v2.129.8")) == 33
    assert "presence_enabled" in realtime_schema_sql("2.78.15")
    assert "gcm_migrated_at" not in realtime_schema_sql("2.78.15")
    assert "gcm_migrated_at" in realtime_schema_sql("2.129.8")
    assert "migrations_ran" not in realtime_schema_sql("2.34.47")


def test_demo_rls(cluster: PostgresCluster) -> None:
    with cluster.connect() as conn:
        conn.execute(
            "insert into todos (task, owner) values ('mine', %s), ('public', null), ('other', gen_random_uuid())",
            (USER_A,),
        )

        def visible(role: str, claims: dict[str, str]) -> list[str]:
            with conn.transaction():
                conn.execute(f"set local role {role}")
                conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
                rows = [r[0] for r in conn.execute("select task from todos order by id").fetchall()]
                conn.execute("reset role")
            return rows

        assert visible("authenticated", {"sub": USER_A, "role": "authenticated"}) == ["mine"]
        assert visible("anon", {"role": "anon"}) == ["public"]
        assert visible("service_role", {"role": "service_role"}) == ["mine", "public", "other"]


def test_stop_is_idempotent_and_cleans_up(tmp_path: os.PathLike[str]) -> None:
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    c = PostgresCluster(wal_level="replica")
    c.start()
    base = c.base_dir
    assert base is not None and base.exists()
    with c.connect() as conn:
        assert conn.execute("show wal_level").fetchone() == ("replica",)
    c.stop()
    c.stop()
    assert not base.exists()


def test_tenant_schema_realtime_messages_and_topic(cluster: PostgresCluster) -> None:
    """realtime.messages and realtime.topic() as Realtime's tenant migrations define them (v2.78.15 here: no
    binary_payload, which v2.98.0 adds)."""
    with cluster.connect() as conn:
        cols = conn.execute(
            "select column_name, data_type, is_nullable from information_schema.columns "
            "where table_schema = 'realtime' and table_name = 'messages' order by ordinal_position").fetchall()
        assert cols == [("topic", "text", "NO"), ("extension", "text", "NO"), ("payload", "jsonb", "YES"),
                        ("event", "text", "YES"), ("private", "boolean", "YES"),
                        ("updated_at", "timestamp without time zone", "NO"),
                        ("inserted_at", "timestamp without time zone", "NO"), ("id", "uuid", "NO")]
        rel = conn.execute(
            "select c.relkind, c.relrowsecurity, r.rolname from pg_class c "
            "join pg_roles r on r.oid = c.relowner where c.oid = 'realtime.messages'::regclass").fetchone()
        assert rel == ("p", True, "supabase_realtime_admin")  # partitioned, RLS on, owned by the admin role
        parts = conn.execute("select count(*) from pg_inherits where inhparent = 'realtime.messages'::regclass")
        assert parts.fetchone() == (5,)  # yesterday .. today + 3
        for role in ("anon", "authenticated", "service_role"):
            privs = conn.execute("select has_table_privilege(%s, 'realtime.messages', 'INSERT'), "
                                 "has_table_privilege(%s, 'realtime.messages', 'SELECT'), "
                                 "has_table_privilege(%s, 'realtime.messages', 'DELETE')", (role, role, role))
            assert privs.fetchone() == (True, True, False)
        with conn.transaction():
            conn.execute("select set_config('realtime.topic', 'room-1', true)")
            assert conn.execute("select realtime.topic()").fetchone() == ("room-1",)
        assert conn.execute("select realtime.topic()").fetchone() == (None,)
