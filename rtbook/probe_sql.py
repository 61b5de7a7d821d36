"""The SQL of the rtbook probe, in one place: :mod:`rtbook.probe` and the sandbox's bootstrap both use it.

A plain module of SQL text and small pure functions that assemble it; it imports nothing from
rtbook, so the sandbox (which may not import rtbook's clients or checks) can create exactly the
objects that ``rtbook probe install --yes`` creates.

The probe is one small table, ``rtbook_probe.events``, that the live checks may write to (and
only to it) to prove that changes are delivered:

* ``id`` (identity primary key), ``owner uuid``, ``is_public boolean``, ``payload jsonb``,
  ``created_at timestamptz``;
* ``REPLICA IDENTITY FULL`` (UPDATE/DELETE carry the old row);
* RLS enabled with two SELECT policies, the per-role test of ``realtime.rls``: ``anon`` sees the
  rows marked public; ``authenticated`` sees public rows and its own rows (``owner`` equals the
  JWT ``sub``, read the way ``auth.uid()`` reads it); ``service_role`` bypasses RLS (BYPASSRLS in
  the Supabase image). Nobody but the owner (the installing user) may write;
* in the Realtime publication (``supabase_realtime``), added once at install.
"""

from __future__ import annotations

import re

__all__ = [
    "COMMENT_PREFIX",
    "PROBE_ROLES",
    "SCHEMA",
    "TABLE",
    "add_to_publication_sql",
    "drop_from_publication_sql",
    "drop_schema_sql",
    "drop_table_sql",
    "install_statements",
    "object_statements",
    "parse_installed_at",
    "qualified",
]

SCHEMA = "rtbook_probe"
TABLE = "events"
# The roles whose delivery realtime.rls tests; the Supabase image creates all three.
PROBE_ROLES = ("anon", "authenticated", "service_role")
COMMENT_PREFIX = "rtbook probe v1"

# The subscriber's user id as auth.uid() reads it: request.jwt.claim.sub (older PostgREST) or the
# sub of request.jwt.claims (what Realtime sets when it checks a row for a subscriber). Written out
# instead of calling auth.uid() so the probe works on a database without Supabase's auth schema.
_JWT_SUB = (
    "coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''), "
    "(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))"
)

_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")


def _ident(name: str) -> str:
    """Quote an identifier when it needs it."""
    return name if _IDENT.match(name) else '"' + name.replace('"', '""') + '"'


def qualified() -> str:
    """``rtbook_probe.events``."""
    return f"{_ident(SCHEMA)}.{_ident(TABLE)}"


def object_statements() -> list[str]:
    """Create the schema, the table, its policies and grants (idempotent; the publication is separate).

    Each statement may run again on a complete or partial probe without error, so an install that
    completes a half-made probe uses the same text as a fresh one.
    """
    t = qualified()
    roles = ", ".join(PROBE_ROLES)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {_ident(SCHEMA)}",
        f"CREATE TABLE IF NOT EXISTS {t} (\n"
        "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
        "  owner uuid,\n"
        "  is_public boolean NOT NULL DEFAULT false,\n"
        "  payload jsonb NOT NULL DEFAULT '{}'::jsonb,\n"
        "  created_at timestamptz NOT NULL DEFAULT now()\n"
        ")",
        f"ALTER TABLE {t} REPLICA IDENTITY FULL",
        f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS rtbook_probe_anon_public ON {t}",
        f"CREATE POLICY rtbook_probe_anon_public ON {t} FOR SELECT TO anon USING (is_public)",
        f"DROP POLICY IF EXISTS rtbook_probe_authenticated_own ON {t}",
        f"CREATE POLICY rtbook_probe_authenticated_own ON {t} FOR SELECT TO authenticated\n"
        f"  USING (is_public OR owner::text = {_JWT_SUB})",
        f"GRANT USAGE ON SCHEMA {_ident(SCHEMA)} TO {roles}",
        f"GRANT SELECT ON {t} TO {roles}",
        # The install time, for realtime.postgres_changes: Realtime re-reads the publication every 60 s,
        # so for a minute after the install a running Realtime may still act on the old table list.
        "DO $$ BEGIN EXECUTE 'COMMENT ON TABLE " + t + " IS ' || quote_literal('" + COMMENT_PREFIX
        + "; installed ' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        " || '; rtbook probe remove --yes drops it'); END $$",
    ]


def add_to_publication_sql(publication: str) -> str:
    """Add the probe table to ``publication`` (run once: adding an existing member is an error)."""
    return f"ALTER PUBLICATION {_ident(publication)} ADD TABLE {qualified()}"


def drop_from_publication_sql(publication: str) -> str:
    """Take the probe table out of ``publication``."""
    return f"ALTER PUBLICATION {_ident(publication)} DROP TABLE {qualified()}"


def drop_table_sql() -> str:
    """Drop the probe table (its policies, grants and sequence go with it)."""
    return f"DROP TABLE IF EXISTS {qualified()}"


def drop_schema_sql() -> str:
    """Drop the probe's schema; RESTRICT: it refuses if something else was put in it."""
    return f"DROP SCHEMA IF EXISTS {_ident(SCHEMA)} RESTRICT"


def install_statements(publication: str = "supabase_realtime", *, add_to_publication: bool = True) -> list[str]:
    """Everything a fresh install runs, in order (the sandbox runs exactly this)."""
    out = object_statements()
    if add_to_publication:
        out.append(add_to_publication_sql(publication))
    return out


_INSTALLED = re.compile(r"installed (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")


def parse_installed_at(comment: str | None) -> str | None:
    """The ISO UTC install time written into the table's comment, or None."""
    if not comment or not comment.startswith(COMMENT_PREFIX):
        return None
    found = _INSTALLED.search(comment)
    return found.group(1) if found else None
