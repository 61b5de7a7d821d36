"""The part of Realtime's tenant schema the stand-in uses: ``realtime.messages`` and ``realtime.topic()``.

Defined as Realtime's tenant migrations leave them (v2.129.8 ``priv/repo/tenant_schema/realtime/tables/messages.sql``
and ``functions/topic.sql``; v2.78.19 migrations ``20240523004032_redefine_authorization_tables``,
``20241030150047_messages_partitioning``, ``20241108114728_messages_using_uuid``): a table partitioned by day on
``inserted_at`` with RLS enabled and no policy, owned by ``supabase_realtime_admin``, where ``anon``,
``authenticated`` and ``service_role`` may INSERT, SELECT and UPDATE — so private channels are refused until
the user writes policies. ``binary_payload`` exists from v2.98.0 on.

Partitions are created like ``Realtime.Tenants.create_messages_partitions/1``: one per UTC day from
yesterday to three days ahead, named ``messages_YYYY_MM_DD``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from rtbook.sandbox.server_version import RealtimeBehaviour

__all__ = ["partitions_sql", "tenant_schema_sql"]


def tenant_schema_sql(behaviour: RealtimeBehaviour) -> str:
    """Idempotent DDL for the role, schema, ``realtime.messages`` and ``realtime.topic()``."""
    binary = ',\n  "binary_payload" bytea' if behaviour.messages_binary_payload else ""
    # An older image's table gains the column when a newer image migrates it (20260514120000).
    add_binary = (
        "\nALTER TABLE realtime.messages ADD COLUMN IF NOT EXISTS binary_payload bytea;"
        if behaviour.messages_binary_payload else ""
    )
    exclusive = (
        """
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'messages_payload_exclusive') THEN
    ALTER TABLE realtime.messages ADD CONSTRAINT messages_payload_exclusive
      CHECK (((payload IS NULL) OR (binary_payload IS NULL))) NOT VALID;
  END IF;
END $$;"""
        if behaviour.messages_binary_payload
        else ""
    )
    return f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'supabase_realtime_admin') THEN
    CREATE ROLE supabase_realtime_admin WITH NOINHERIT NOLOGIN NOREPLICATION;
  END IF;
END $$;
CREATE SCHEMA IF NOT EXISTS realtime AUTHORIZATION supabase_admin;
GRANT USAGE ON SCHEMA realtime TO postgres, anon, authenticated, service_role;
GRANT CREATE, USAGE ON SCHEMA realtime TO supabase_realtime_admin WITH GRANT OPTION;
CREATE TABLE IF NOT EXISTS realtime.messages (
  "topic" text NOT NULL,
  "extension" text NOT NULL,
  "payload" jsonb,
  "event" text,
  "private" boolean DEFAULT false,
  "updated_at" timestamp without time zone NOT NULL DEFAULT now(),
  "inserted_at" timestamp without time zone NOT NULL DEFAULT now(),
  "id" uuid NOT NULL DEFAULT gen_random_uuid(){binary},
  CONSTRAINT messages_pkey PRIMARY KEY (id, inserted_at)
) PARTITION BY RANGE (inserted_at);{add_binary}{exclusive}
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE realtime.messages OWNER TO supabase_realtime_admin;
GRANT INSERT, SELECT, UPDATE ON TABLE realtime.messages TO anon, authenticated, service_role;
CREATE INDEX IF NOT EXISTS messages_inserted_at_topic_index ON ONLY realtime.messages
  USING btree (inserted_at DESC, topic) WHERE ((extension = 'broadcast'::text) AND (private IS TRUE));
CREATE OR REPLACE FUNCTION realtime.topic() RETURNS text LANGUAGE sql STABLE AS $function$
select nullif(current_setting('realtime.topic', true), '')::text;
$function$;
ALTER FUNCTION realtime.topic() OWNER TO supabase_realtime_admin;
GRANT EXECUTE ON FUNCTION realtime.topic() TO postgres, anon, authenticated, service_role;
GRANT supabase_realtime_admin TO postgres;
"""


def partitions_sql(today: date | None = None) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS realtime.messages_<day> PARTITION OF …`` for yesterday … today + 3 (UTC)."""
    day0 = today or datetime.now(UTC).date()
    out = []
    for offset in range(-1, 4):
        day = day0 + timedelta(days=offset)
        name = f"messages_{day.isoformat().replace('-', '_')}"
        out.append(
            f"CREATE TABLE IF NOT EXISTS realtime.{name} PARTITION OF realtime.messages "
            f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')"
        )
        out.append(f"ALTER TABLE realtime.{name} OWNER TO supabase_realtime_admin")
    return out
