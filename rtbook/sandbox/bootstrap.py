"""What the supabase/postgres image and Realtime's own migrations provide, on a plain cluster.

:func:`bootstrap` creates the roles (``supabase_admin``, ``postgres``, ``anon``, ``authenticated``,
``service_role``, ``authenticator``), the ``auth.uid()``/``auth.role()``/``auth.jwt()`` helpers,
Realtime's ``_realtime`` metadata schema (column-for-column for the given image version), the
tenant schema Realtime's tenant migrations create and private channels use (``realtime.messages``
with its day partitions and ``realtime.topic()``, see :mod:`rtbook.sandbox.tenant_schema`), the
empty ``supabase_realtime`` publication and a demo table ``public.todos`` with RLS.

:func:`seed_tenant` writes the tenant row and its single ``postgres_cdc_rls`` extension row the way
Realtime's ``priv/repo/seeds.exs`` does when ``SEED_SELF_HOST=true``: delete-then-insert in one
transaction, ``jwt_secret`` and the five database settings encrypted with ``DB_ENC_KEY``.

Demo table policies (``public.todos``, RLS enabled, not forced):

* ``authenticated`` may SELECT rows whose ``owner`` equals the JWT ``sub`` (``auth.uid()``), and
  INSERT/UPDATE/DELETE its own rows;
* ``anon`` may SELECT rows whose ``owner`` is NULL (public rows);
* ``service_role`` has BYPASSRLS and sees everything; so does ``supabase_admin``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from rtbook import probe_sql
from rtbook.crypto import encrypt
from rtbook.exceptions import ConfigError
from rtbook.sandbox.postgres import PostgresCluster
from rtbook.sandbox.server_version import RealtimeBehaviour
from rtbook.sandbox.tenant_schema import partitions_sql, tenant_schema_sql
from rtbook.secrets import Secret

__all__ = [
    "DEFAULT_REALTIME_VERSION",
    "PUBLICATION",
    "TenantLimits",
    "bootstrap",
    "install_probe",
    "migrations_for",
    "realtime_schema_sql",
    "seed_tenant",
]

DEFAULT_REALTIME_VERSION = "2.78.15"
PUBLICATION = "supabase_realtime"
DEMO_TABLE = "public.todos"

# Realtime's own Ecto migrations (priv/repo/migrations), by the first image tag that has them.
# Read from the supabase/realtime repository at tags v2.34.47, v2.78.15 and HEAD (2.129.8).
_MIGRATIONS_2_34_47: tuple[int, ...] = (
    20210706140551, 20220329161857, 20220410212326, 20220506102948, 20220527210857, 20220815211129,
    20220815215024, 20220818141501, 20221018173709, 20221102172703, 20221223010058, 20230110180046,
    20230810220907, 20230810220924, 20231024094642, 20240306114423, 20240418082835, 20240625211759,
    20240704172020, 20240902173232, 20241106103258,
)
_MIGRATIONS_2_78_15: tuple[int, ...] = (
    *_MIGRATIONS_2_34_47,
    20250424203323, 20250613072131, 20250711044927, 20250811121559, 20250926223044, 20251204170944,
    20251218000543, 20260209232800, 20260304000000,
)
_MIGRATIONS_HEAD: tuple[int, ...] = (*_MIGRATIONS_2_78_15, 20260422000000, 20260709151810, 20260805000000)
_KNOWN: tuple[tuple[tuple[int, int, int], tuple[int, ...]], ...] = (
    ((2, 34, 47), _MIGRATIONS_2_34_47),
    ((2, 78, 15), _MIGRATIONS_2_78_15),
    ((2, 129, 0), _MIGRATIONS_HEAD),
)


def _parse_version(version: str) -> tuple[int, int, int]:
    text = version.strip().lstrip("v")
    parts = text.split(".")
    try:
        major, minor, patch = (int(p) for p in [*parts, "0", "0"][:3])
    except ValueError as exc:
        raise ConfigError(
            f"realtime_version {version!r} is not a version like 2.78.15; use the image tag without the leading v"
        ) from exc
    return major, minor, patch


def migrations_for(realtime_version: str) -> tuple[int, ...]:
    """The ``_realtime.schema_migrations`` versions an image of ``realtime_version`` has run.

    Versions between the known tags get the list of the nearest known tag below them.
    """
    wanted = _parse_version(realtime_version)
    chosen = _KNOWN[0][1]
    for tag, migrations in _KNOWN:
        if wanted >= tag:
            chosen = migrations
    return chosen


@dataclass(frozen=True)
class TenantLimits:
    """Per-tenant limits; the defaults are Realtime's app defaults applied to the seeded tenant."""

    max_concurrent_users: int = 200
    max_events_per_second: int = 100
    max_joins_per_second: int = 100
    max_channels_per_client: int = 100
    max_bytes_per_second: int = 100_000


def realtime_schema_sql(realtime_version: str = DEFAULT_REALTIME_VERSION) -> str:
    """DDL for the ``_realtime`` schema as Realtime's migrations leave it at ``realtime_version``."""
    migs = set(migrations_for(realtime_version))
    cols = [
        "id uuid PRIMARY KEY",
        "name text",
        "external_id text",
        # nullable_jwt_secrets (20251204170944) dropped NOT NULL and added a CHECK.
        "jwt_secret text" if 20251204170944 in migs else "jwt_secret text NOT NULL",
        "max_concurrent_users integer NOT NULL DEFAULT 200",
        "inserted_at timestamp(0) without time zone NOT NULL",
        "updated_at timestamp(0) without time zone NOT NULL",
        "max_events_per_second integer NOT NULL DEFAULT 100",
        "postgres_cdc_default text DEFAULT 'postgres_cdc_rls'",
        "max_bytes_per_second integer NOT NULL DEFAULT 100000",
        "max_channels_per_client integer NOT NULL DEFAULT 100",
        "max_joins_per_second integer NOT NULL DEFAULT 500",
        "suspend boolean DEFAULT false",
        "jwt_jwks jsonb DEFAULT NULL",
        "notify_private_alpha boolean DEFAULT false",
        "private_only boolean NOT NULL DEFAULT false",
    ]
    if 20250424203323 in migs:
        cols.append("migrations_ran integer DEFAULT 0")
    if 20250613072131 in migs:
        default = "gen_rpc" if 20250711044927 in migs else "phoenix"
        cols.append(f"broadcast_adapter character varying(255) DEFAULT '{default}'")
    if 20250811121559 in migs:
        cols.append("max_presence_events_per_second integer DEFAULT 1000")
        cols.append("max_payload_size_in_kb integer DEFAULT 3000")
    if 20260209232800 in migs:
        cols.append("max_client_presence_events_per_window integer")
        cols.append("client_presence_window_ms integer")
    if 20260304000000 in migs:
        cols.append("presence_enabled boolean NOT NULL DEFAULT false")
    if 20260422000000 in migs:
        cols.append("feature_flags jsonb NOT NULL DEFAULT '{}'::jsonb")
    if 20260805000000 in migs:
        cols.append("gcm_migrated_at timestamp(0) without time zone")
    if 20251204170944 in migs:
        cols.append(
            "CONSTRAINT jwt_secret_or_jwt_jwks_required CHECK (jwt_secret IS NOT NULL OR jwt_jwks IS NOT NULL)"
        )
    parts = [
        "CREATE SCHEMA IF NOT EXISTS _realtime AUTHORIZATION supabase_admin;",
        "CREATE TABLE _realtime.schema_migrations (version bigint PRIMARY KEY, "
        "inserted_at timestamp(0) without time zone);",
        "CREATE TABLE _realtime.tenants (\n  " + ",\n  ".join(cols) + "\n);",
        "CREATE UNIQUE INDEX tenants_external_id_index ON _realtime.tenants (external_id);",
        """CREATE TABLE _realtime.extensions (
  id uuid PRIMARY KEY,
  type text,
  settings jsonb,
  tenant_external_id text REFERENCES _realtime.tenants (external_id) ON DELETE CASCADE,
  inserted_at timestamp(0) without time zone NOT NULL,
  updated_at timestamp(0) without time zone NOT NULL
);""",
        "CREATE UNIQUE INDEX extensions_tenant_external_id_type_index "
        "ON _realtime.extensions (tenant_external_id, type);",
        "CREATE INDEX extensions_tenant_external_id_index ON _realtime.extensions (tenant_external_id);",
    ]
    if 20260422000000 in migs:
        parts.append(
            """CREATE TABLE _realtime.feature_flags (
  id uuid PRIMARY KEY,
  name character varying(255) NOT NULL,
  enabled boolean NOT NULL DEFAULT false,
  inserted_at timestamp(0) without time zone NOT NULL,
  updated_at timestamp(0) without time zone NOT NULL
);
CREATE UNIQUE INDEX feature_flags_name_index ON _realtime.feature_flags (name);"""
        )
    if 20260709151810 in migs:
        parts.append(
            "ALTER TABLE _realtime.feature_flags ADD COLUMN rollout_percentage integer NOT NULL DEFAULT 100, "
            "ADD COLUMN bucket_key character varying(255), "
            "ADD CONSTRAINT rollout_percentage_must_be_between_0_and_100 "
            "CHECK (rollout_percentage >= 0 AND rollout_percentage <= 100);"
        )
    values = ", ".join(f"({v}, now() at time zone 'utc')" for v in sorted(migs))
    parts.append(f"INSERT INTO _realtime.schema_migrations (version, inserted_at) VALUES {values};")
    parts.append("ALTER TABLE _realtime.tenants OWNER TO supabase_admin;")
    parts.append("ALTER TABLE _realtime.extensions OWNER TO supabase_admin;")
    return "\n".join(parts)


_ROLES_SQL = """
ALTER ROLE supabase_admin WITH SUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS LOGIN;
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'postgres') THEN
    CREATE ROLE postgres WITH LOGIN CREATEDB CREATEROLE REPLICATION BYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
    CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
    CREATE ROLE authenticator WITH LOGIN NOINHERIT;
  END IF;
END $$;
GRANT anon, authenticated, service_role TO authenticator;
GRANT anon, authenticated, service_role TO postgres;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;

CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION supabase_admin;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role, postgres;
-- Same shape as the supabase/postgres helpers: read the claims PostgREST/Realtime set per request.
CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $f$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$f$;
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$f$;
CREATE OR REPLACE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $f$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$f$;
GRANT EXECUTE ON FUNCTION auth.jwt(), auth.uid(), auth.role() TO anon, authenticated, service_role, postgres;
"""

_PUBLICATION_SQL = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
    CREATE PUBLICATION supabase_realtime;
  END IF;
END $$;
"""

_DEMO_SQL = """
CREATE TABLE IF NOT EXISTS public.todos (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  task text,
  owner uuid,
  done boolean NOT NULL DEFAULT false,
  inserted_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.todos TO anon, authenticated, service_role, postgres;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO anon, authenticated, service_role, postgres;
DROP POLICY IF EXISTS todos_select_own ON public.todos;
CREATE POLICY todos_select_own ON public.todos FOR SELECT TO authenticated USING (owner = auth.uid());
DROP POLICY IF EXISTS todos_write_own ON public.todos;
CREATE POLICY todos_write_own ON public.todos FOR ALL TO authenticated
  USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
DROP POLICY IF EXISTS todos_select_public ON public.todos;
CREATE POLICY todos_select_public ON public.todos FOR SELECT TO anon USING (owner IS NULL);
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_publication_tables
                 WHERE pubname = 'supabase_realtime' AND schemaname = 'public' AND tablename = 'todos') THEN
    ALTER PUBLICATION supabase_realtime ADD TABLE public.todos;
  END IF;
END $$;
"""


def _password_sql(roles: tuple[str, ...], password: Secret) -> sql.Composed:
    return sql.SQL(" ").join(
        sql.SQL("ALTER ROLE {} WITH PASSWORD {};").format(sql.Identifier(role), sql.Literal(password.reveal()))
        for role in roles
    )


def bootstrap(
    cluster: PostgresCluster,
    *,
    tenant: str = "realtime-dev",
    jwt_secret: str | Secret,
    db_enc_key: str | Secret = "supabaserealtime",
    realtime_version: str = DEFAULT_REALTIME_VERSION,
    demo: bool = True,
    seed: bool = True,
    probe: bool = False,
) -> None:
    """Give a fresh cluster what the supabase/postgres image and Realtime's boot provide.

    Roles (``supabase_admin``, ``postgres`` and ``authenticator`` log in with the cluster
    password), ``auth`` helpers, the ``_realtime`` schema for ``realtime_version``, the
    ``supabase_realtime`` publication, the demo table ``public.todos`` (``demo``) and the seeded
    tenant (``seed``, see :func:`seed_tenant`). Running it again on the same cluster is safe: the
    ``_realtime`` schema is kept and the tenant is re-seeded.

    ``probe`` also installs the rtbook probe (``rtbook_probe.events`` in the publication, the same
    SQL ``rtbook probe install --yes`` runs, from :mod:`rtbook.probe_sql`), so the live checks can
    prove delivery; a stand-in for a user who installed it on purpose.
    """
    with cluster.connect() as conn:
        conn.execute(_ROLES_SQL.encode())
        conn.execute(_password_sql(("supabase_admin", "postgres", "authenticator"), cluster.password))
        conn.execute(_PUBLICATION_SQL.encode())
        cur = conn.execute("SELECT to_regclass('_realtime.tenants') IS NULL")
        fresh = cur.fetchone()
        if fresh is not None and fresh[0]:
            conn.execute(realtime_schema_sql(realtime_version).encode())
        # What seeds.exs does after inserting the tenant: run the tenant migrations and the janitor's partitions.
        behaviour = RealtimeBehaviour.of(realtime_version)
        conn.execute(tenant_schema_sql(behaviour).encode())
        for statement in partitions_sql():
            conn.execute(statement.encode())
        if demo:
            conn.execute(_DEMO_SQL.encode())
        if probe:
            install_probe(conn)
        if seed:
            seed_tenant(
                conn,
                tenant=tenant,
                jwt_secret=jwt_secret,
                db_enc_key=db_enc_key,
                db_host=cluster.host,
                db_port=str(cluster.port),
                db_name="postgres",
                db_user=cluster.superuser,
                db_password=cluster.password,
                migrations_ran=behaviour.tenant_migrations,
            )


def install_probe(conn: psycopg.Connection[Any], publication: str = PUBLICATION) -> None:
    """Install the rtbook probe in one transaction (a no-op when it is already in the publication)."""
    cur = conn.execute(
        "SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s AND tablename = %s",
        (publication, probe_sql.SCHEMA, probe_sql.TABLE),
    )
    if cur.fetchone() is not None:
        return
    with conn.transaction():
        for statement in probe_sql.install_statements(publication):
            conn.execute(statement.encode())


def seed_tenant(
    target: PostgresCluster | psycopg.Connection[Any],
    *,
    tenant: str = "realtime-dev",
    jwt_secret: str | Secret | None,
    db_enc_key: str | Secret = "supabaserealtime",
    db_host: str = "host.docker.internal",
    db_port: str | int = "5433",
    db_name: str = "postgres",
    db_user: str = "supabase_admin",
    db_password: str | Secret = "postgres",
    jwt_jwks: Mapping[str, Any] | None = None,
    limits: TenantLimits | None = None,
    extension_settings: Mapping[str, Any] | None = None,
    migrations_ran: int | None = None,
) -> uuid.UUID:
    """Write the tenant and its one ``postgres_cdc_rls`` extension row like ``SEED_SELF_HOST``.

    Deletes an existing tenant with the same external id (its extension rows go by cascade) and
    inserts a fresh one in one transaction. ``extension_settings`` overrides or adds plain
    (unencrypted) settings keys, for break scenarios. ``migrations_ran`` records that the tenant
    migrations already ran (seeds.exs runs them right after the insert); None leaves the column's
    default (0: the next connect or health check migrates). Returns the new tenant id.
    """
    if isinstance(target, PostgresCluster):
        with target.connect() as conn:
            return seed_tenant(
                conn, tenant=tenant, jwt_secret=jwt_secret, db_enc_key=db_enc_key, db_host=db_host,
                db_port=db_port, db_name=db_name, db_user=db_user, db_password=db_password,
                jwt_jwks=jwt_jwks, limits=limits, extension_settings=extension_settings,
                migrations_ran=migrations_ran,
            )
    conn = target
    lim = limits or TenantLimits()
    key = db_enc_key

    def enc(value: str | Secret) -> str:
        return encrypt(value.reveal() if isinstance(value, Secret) else value, key)

    secret_cipher = enc(jwt_secret) if jwt_secret is not None else None
    settings: dict[str, Any] = {
        "db_name": enc(db_name),
        "db_host": enc(db_host),
        "db_user": enc(db_user),
        "db_password": enc(db_password),
        # Realtime validates db_port as a binary (string); an integer is rejected by its changeset.
        "db_port": enc(str(db_port)),
        "region": "us-east-1",
        "poll_interval_ms": 100,
        "poll_max_record_bytes": 1_048_576,
        "ssl_enforced": False,
        # merged defaults (Extensions.PostgresCdcRls.DbSettings.default/0)
        "poll_max_changes": 100,
        "publication": PUBLICATION,
        "slot_name": "supabase_realtime_replication_slot",
    }
    if extension_settings:
        settings.update(extension_settings)
    tenant_id = uuid.uuid4()
    # transaction() opens a real transaction block even on an autocommit connection.
    with conn.transaction():
        conn.execute("DELETE FROM _realtime.tenants WHERE external_id = %s", (tenant,))
        conn.execute(
            """INSERT INTO _realtime.tenants
               (id, name, external_id, jwt_secret, jwt_jwks, max_concurrent_users, max_events_per_second,
                max_joins_per_second, max_channels_per_client, max_bytes_per_second, inserted_at, updated_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                       now() at time zone 'utc', now() at time zone 'utc')""",
            (
                tenant_id, tenant, tenant, secret_cipher,
                json.dumps(dict(jwt_jwks)) if jwt_jwks is not None else None,
                lim.max_concurrent_users, lim.max_events_per_second, lim.max_joins_per_second,
                lim.max_channels_per_client, lim.max_bytes_per_second,
            ),
        )
        conn.execute(
            """INSERT INTO _realtime.extensions (id, type, settings, tenant_external_id, inserted_at, updated_at)
               VALUES (%s, 'postgres_cdc_rls', %s::jsonb, %s, now() at time zone 'utc', now() at time zone 'utc')""",
            (uuid.uuid4(), json.dumps(settings), tenant),
        )
        if migrations_ran is not None:
            has_column = conn.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = '_realtime' "
                "AND table_name = 'tenants' AND column_name = 'migrations_ran'"
            ).fetchone()
            if has_column:
                conn.execute("UPDATE _realtime.tenants SET migrations_ran = %s WHERE external_id = %s",
                             (migrations_ran, tenant))
    return tenant_id
