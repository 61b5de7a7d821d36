"""``tenant.*`` checks: the tenant row and its one ``postgres_cdc_rls`` extension row, against the stack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from rtbook.checks.db import with_connection
from rtbook.registry import register
from rtbook.results import CheckResult, Status
from rtbook.secrets import REDACTED, Secret
from rtbook.seeding import (
    _GCM_NOTE,
    _MIGRATION_COUNTS,
    _SEEDED_LIMITS,
    CDC_TYPE,
    ENCRYPTED_SETTINGS,
    EXTENSION_COLUMNS,
    LIMIT_COLUMNS,
    REQUIRED_TENANT_COLUMNS,
    SETTING_ENV,
    TENANT_COLUMNS,
    Expected,
    MetadataState,
    _decrypt,
    _needs_gcm_key,
    expected,
    read_state,
)
from rtbook.target import Target

# ------------------------------------------------------------------ checks


def _tenant_body(target: Target, cid: str,
                 judge: Callable[[MetadataState, Expected], CheckResult]) -> CheckResult | list[CheckResult]:
    def body(conn: Connection) -> CheckResult:
        state = read_state(conn, target.redactor)
        if not state.readable:
            return CheckResult(cid, Status.SKIP, summary="Skipped: the _realtime tables are missing or incomplete "
                               "(see tenant.schema).", see_also=("tenant.schema",))
        return judge(state, expected(target))

    return with_connection(target, cid, body)


def _no_row(cid: str, exp: Expected) -> CheckResult:
    return CheckResult(cid, Status.SKIP, summary=f"Skipped: tenant {exp.tenant!r} has no row (see tenant.row).",
                       see_also=("tenant.row",))


@register("tenant.schema", "Realtime's _realtime schema and tables exist with known columns", needs=("db",))
def check_schema(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """``_realtime.tenants`` and ``_realtime.extensions`` exist with the columns of a known Realtime version."""

    def body(conn: Connection) -> CheckResult:
        state = read_state(conn, target.redactor)
        evidence: dict[str, Any] = {"schema": state.schema_exists, "tenants_columns": list(state.tenant_columns),
                                    "extensions_columns": list(state.extension_columns),
                                    "schema_migrations": state.migrations}
        restart = ("Make sure the realtime service has DB_AFTER_CONNECT_QUERY: 'SET search_path TO _realtime' and "
                   "restart it so its migrations create the tables (docker compose restart realtime).")
        if not state.schema_exists:
            elsewhere = conn.execute(sa.text(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'tenants' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema')")).scalars().all()
            where = f" A tenants table exists in schema(s) {', '.join(map(str, elsewhere))}: the migrations ran " \
                    "with the wrong search_path." if elsewhere else ""
            return CheckResult(
                cid, Status.FAIL, summary="The _realtime schema does not exist.",
                detail="Realtime keeps its tenants in _realtime (created by volumes/db/realtime.sql in the official "
                "stack). Without it Realtime fails with 'relation \"tenants\" does not exist' and every "
                "connection is refused." + where,
                remedy="CREATE SCHEMA IF NOT EXISTS _realtime AUTHORIZATION supabase_admin; " + restart,
                cause="tenant.relation_tenants_missing", evidence=evidence,
            )
        missing_tables = [t for t, cols in (("tenants", state.tenant_columns),
                                            ("extensions", state.extension_columns)) if not cols]
        if missing_tables:
            return CheckResult(
                cid, Status.FAIL, summary=f"_realtime exists but has no {' or '.join(missing_tables)} table.",
                detail="Realtime's migrations have not run (or ran elsewhere); lookups fail with "
                "'relation \"tenants\" does not exist'.",
                remedy=restart, cause="tenant.relation_tenants_missing", evidence=evidence,
            )
        missing = [c for c in REQUIRED_TENANT_COLUMNS if c not in state.tenant_columns]
        missing += [f"extensions.{c}" for c in EXTENSION_COLUMNS if c not in state.extension_columns]
        if missing:
            return CheckResult(
                cid, Status.FAIL, summary=f"Realtime's tables lack required column(s): {', '.join(missing)}.",
                detail="The tables do not match any Realtime version rtbook knows; they were probably made by hand.",
                remedy="Drop the hand-made tables and let Realtime's migrations create them: " + restart,
                cause="tenant.schema_unknown", evidence=evidence,
            )
        known = dict(TENANT_COLUMNS)
        unknown = [c for c in state.tenant_columns if c not in known]
        newest = max((known[c] for c in state.tenant_columns if c in known), default="?")
        evidence["matches_release_from"] = newest
        if unknown:
            return CheckResult(
                cid, Status.WARN,
                summary=f"_realtime.tenants has column(s) rtbook does not know: {', '.join(unknown)}.",
                detail=f"Known columns match Realtime releases up to {newest}; a newer Realtime may have added these. "
                "rtbook reads and writes only the columns it knows.",
                remedy="Upgrade rtbook if its tenant checks misread this version.", evidence=evidence,
            )
        release = _MIGRATION_COUNTS.get(state.migrations or -1)
        if release:
            evidence["release_by_migrations"] = release
        return CheckResult(
            cid, Status.PASS,
            summary=f"_realtime.tenants and extensions exist; columns match Realtime's schema as of {newest}"
            + (f" ({state.migrations} migrations recorded" + (f", as in v{release})." if release else ").")
               if state.migrations is not None else "."),
            evidence=evidence,
        )

    return with_connection(target, cid, body)


@register("tenant.row", "A tenant row exists for the tenant clients resolve to", needs=("db",))
def check_row(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """The tenant id requests carry (the Host header's first label) has a row."""

    def judge(state: MetadataState, exp: Expected) -> CheckResult:
        present = [t.external_id for t in state.tenants]
        evidence = {"expected": exp.tenant, "tenants": present}
        row = state.tenant(exp.tenant)
        if row is None:
            return CheckResult(
                cid, Status.FAIL, summary=f"No tenant row for {exp.tenant!r}; tenants present: "
                f"{', '.join(present) or 'none'}.",
                detail=f"Realtime looks the tenant up by the first label of the request's Host header ({exp.tenant!r} "
                "here). Without a row clients get 'Tenant not found' (404, or 403 before v2.116) and the health "
                "endpoint answers 404. The seed creates the row on start only when SEED_SELF_HOST is exactly "
                "\"true\".",
                remedy=f"Set SEED_SELF_HOST: \"true\" and SELF_HOST_TENANT_NAME: {exp.tenant} on the realtime service "
                f"and restart it, or run: rtbook tenant apply --yes --create --tenant {exp.tenant} (after a rename "
                f"of the stack's files: rtbook tenant rename {exp.tenant} --stack DIR --apply --yes)",
                cause="tenant.not_found", see_also=("compose.realtime.tenant_consistency",), evidence=evidence,
            )
        return CheckResult(
            cid, Status.PASS, summary=f"Tenant {exp.tenant!r} exists (id {row.id}, updated {row.updated_at})"
            + (f"; other tenants: {', '.join(p for p in present if p != exp.tenant)}." if len(present) > 1 else "."),
            evidence=evidence,
        )

    return _tenant_body(target, cid, judge)


@register("tenant.extension", "Exactly one postgres_cdc_rls extension row", needs=("db",))
def check_extension(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """Realtime reads every tenant-database setting from exactly one postgres_cdc_rls row."""

    def judge(state: MetadataState, exp: Expected) -> CheckResult:
        if state.tenant(exp.tenant) is None:
            return _no_row(cid, exp)
        rows = state.extensions_of(exp.tenant)
        cdc = [e for e in rows if e.type == CDC_TYPE]
        others = [e for e in rows if e.type != CDC_TYPE]
        evidence = {"rows": [{"id": e.id, "type": e.type, "rtbook_created": e.rtbook_created} for e in rows]}
        if len(cdc) == 1 and not others:
            return CheckResult(cid, Status.PASS, summary=f"One postgres_cdc_rls row ({cdc[0].id}).", evidence=evidence)
        problems = []
        if not cdc:
            problems.append("no postgres_cdc_rls row")
        if len(cdc) > 1:
            problems.append(f"{len(cdc)} postgres_cdc_rls rows")
        if others:
            problems.append("extra row(s) of type " + ", ".join(sorted({repr(e.type) for e in others})))
        myth = ""
        if any(e.type in ("broadcast", "presence") for e in others):
            myth = (" Guides that say the seed creates 'broadcast' and 'presence' extension rows are wrong: the seed "
                    "creates exactly one postgres_cdc_rls row, the only extension Realtime registers; broadcast and "
                    "presence need no row (those words are values of realtime.messages.extension in the tenant "
                    "database).")
        ids = " ".join(f"'{e.id}'" for e in (cdc[1:] + others))
        remedy = (f"rtbook tenant apply --yes --tenant {exp.tenant}"
                  + (" --delete-extra" if (others or len(cdc) > 1) else "")
                  + (f"  (or by hand: DELETE FROM _realtime.extensions WHERE id IN ({ids.replace(' ', ', ')});)"
                     if ids else ""))
        return CheckResult(
            cid, Status.FAIL, summary=f"Tenant {exp.tenant!r} has " + "; ".join(problems) + ".",
            detail="Realtime.PostgresCdc.filter_settings pattern-matches exactly one postgres_cdc_rls row: with none "
            "or several every tenant connection crashes, and migrations/region lookups take the first row of any "
            "type." + myth,
            remedy=remedy if cdc or others else
            f"rtbook tenant apply --yes --tenant {exp.tenant} (or restart realtime with SEED_SELF_HOST: \"true\").",
            cause="tenant.extension_count", evidence=evidence,
        )

    return _tenant_body(target, cid, judge)


@register("tenant.jwt_secret", "The stored jwt_secret decrypts and equals API_JWT_SECRET", needs=("db",))
def check_jwt_secret(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """Realtime verifies client tokens with the tenant's stored secret, not the env var."""

    def judge(state: MetadataState, exp: Expected) -> CheckResult:
        row = state.tenant(exp.tenant)
        if row is None:
            return _no_row(cid, exp)
        fix = (f"rtbook tenant apply --yes --tenant {exp.tenant}, or restart realtime with SEED_SELF_HOST: \"true\" "
               "(the seed rewrites the secret from API_JWT_SECRET).")
        sources = f"API_JWT_SECRET from {exp.describe('API_JWT_SECRET')}, DB_ENC_KEY from {exp.describe('DB_ENC_KEY')}"
        if row.jwt_secret is None:
            if row.has_jwks:
                return CheckResult(cid, Status.PASS, summary="No jwt_secret stored; the tenant verifies tokens with "
                                   "its jwt_jwks.")
            return CheckResult(cid, Status.FAIL, summary="The tenant has neither jwt_secret nor jwt_jwks.",
                               remedy=fix, cause="tenant.jwt_secret_missing")
        if exp.jwt_secret is None:
            return CheckResult(cid, Status.WARN, summary="API_JWT_SECRET is not known, so the stored secret cannot "
                               "be compared.", remedy="Pass the stack (--stack) or set API_JWT_SECRET in the "
                               "environment.")
        if exp.enc_key is None and not row.jwt_secret.reveal().startswith("g1:"):
            return CheckResult(cid, Status.WARN, summary="DB_ENC_KEY is not known, so the stored secret cannot be "
                               "decrypted.", remedy="Pass the stack (--stack) or set DB_ENC_KEY in the environment.")
        if _needs_gcm_key(row.jwt_secret, exp):
            return CheckResult(cid, Status.WARN, summary=f"The stored jwt_secret {_GCM_NOTE}.",
                               remedy="Pass the stack (--stack) or set DB_ENC_KEY_GCM in the environment.")
        plain, why = _decrypt(row.jwt_secret, exp)
        if plain is None:
            if row.jwt_secret.reveal() == exp.jwt_secret.reveal():
                return CheckResult(
                    cid, Status.FAIL, summary="jwt_secret is stored in plain text; Realtime expects it encrypted.",
                    detail=f"The stored value equals API_JWT_SECRET unencrypted ({sources}). Realtime decrypts it "
                    "with DB_ENC_KEY and fails, so every token is refused.",
                    remedy=fix, cause="tenant.jwt_secret_plaintext",
                )
            return CheckResult(
                cid, Status.FAIL,
                summary=f"The stored jwt_secret {why}: it was written with a different encryption key.",
                detail=f"Compared with {sources}. Realtime cannot decrypt the secret either, so token verification "
                "fails for every client (join errors, 'Invalid JWT'). This happens when DB_ENC_KEY changed after "
                "the row was written while SEED_SELF_HOST was off.",
                remedy="Restore the DB_ENC_KEY the row was written with, or re-encrypt: " + fix,
                cause="tenant.jwt_secret_wrong_key",
            )
        if plain != exp.jwt_secret.reveal():
            return CheckResult(
                cid, Status.FAIL,
                summary="The stored jwt_secret decrypts but differs from API_JWT_SECRET.",
                detail=f"Compared with {sources}. Tokens signed with the current JWT_SECRET (ANON_KEY, "
                "SERVICE_ROLE_KEY, user sessions) are refused by Realtime with a signature error. Usual cause: "
                "JWT_SECRET was rotated while SEED_SELF_HOST was off, or the seed failed.",
                remedy=fix, cause="tenant.jwt_secret_mismatch", see_also=("compose.realtime.jwt_secret",),
            )
        return CheckResult(cid, Status.PASS, summary="The stored jwt_secret decrypts with DB_ENC_KEY and equals "
                           "API_JWT_SECRET.", detail=f"Compared with {sources}.")

    return _tenant_body(target, cid, judge)


@register("tenant.db_settings", "The stored database settings match the stack", needs=("db",))
def check_db_settings(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """The five encrypted settings decrypt to DB_HOST, DB_PORT (a string), DB_NAME, DB_USER and DB_PASSWORD."""

    def judge(state: MetadataState, exp: Expected) -> CheckResult:
        if state.tenant(exp.tenant) is None:
            return _no_row(cid, exp)
        cdc = [e for e in state.extensions_of(exp.tenant) if e.type == CDC_TYPE]
        if not cdc:
            return CheckResult(cid, Status.SKIP, summary="Skipped: no postgres_cdc_rls row (see tenant.extension).",
                               see_also=("tenant.extension",))
        row = cdc[0]
        findings: list[str] = []
        seen: dict[str, Any] = {}
        unknown: list[str] = []
        for key in ENCRYPTED_SETTINGS:
            env = SETTING_ENV[key]
            want = exp.setting(key)
            want_plain = want.reveal() if isinstance(want, Secret) else want
            if key not in row.encrypted_settings:
                findings.append(f"{key} is missing (Realtime: '{key} can't be blank')")
                continue
            stored = row.encrypted_settings[key]
            if stored is None:
                raw = (row.raw.get("settings") or {}).get(key)
                findings.append(f"{key} is stored as a JSON {type(raw).__name__}, not an encrypted string "
                                "(Realtime: 'is invalid'; db_port must be a string)")
                continue
            if _needs_gcm_key(stored, exp):
                unknown.append(f"DB_ENC_KEY_GCM (for {key})")
                continue
            plain, why = _decrypt(stored, exp)
            if plain is None:
                findings.append(f"{key} {why}")
                continue
            seen[key] = REDACTED if key == "db_password" else plain
            if want_plain is None:
                unknown.append(env)
            elif plain != want_plain:
                shown = "differs from DB_PASSWORD" if key == "db_password" else \
                    f"is {plain!r} but {env} is {want_plain!r} ({exp.describe(env)})"
                findings.append(f"{key} {shown}")
        for key in ("region",):
            if not row.plain_settings.get(key):
                findings.append("region is missing (Realtime requires it)")
        evidence = {"extension_id": row.id, "decrypted": seen, "not_compared": unknown,
                    "plain_settings": dict(row.plain_settings)}
        if findings:
            return CheckResult(
                cid, Status.FAIL, summary="Tenant database settings are wrong: " + "; ".join(findings) + ".",
                detail="Realtime connects to the tenant database (migrations, postgres_changes, broadcast "
                "authorization, health) with these settings; a wrong value shows as db_connected false, "
                "'Failed to set-up tenant' or a crash loop of the tenant's connection.",
                remedy=f"rtbook tenant apply --yes --tenant {exp.tenant}, or restart realtime with SEED_SELF_HOST: "
                "\"true\" so the seed rewrites them from DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD.",
                cause="tenant.db_settings_mismatch", evidence=evidence,
            )
        if unknown:
            return CheckResult(cid, Status.WARN, summary=f"Some settings were not compared: {', '.join(unknown)} "
                               f"{'is' if len(unknown) == 1 else 'are'} not known.",
                               remedy="Pass the stack (--stack) so the realtime service's environment is known.",
                               evidence=evidence)
        shown = ", ".join(f"{k}={v}" for k, v in seen.items() if k != "db_password")
        return CheckResult(cid, Status.PASS, summary=f"Stored settings match the stack ({shown}, password matches).",
                           evidence=evidence)

    return _tenant_body(target, cid, judge)


@register("tenant.limits", "Tenant limits and flags are sane", needs=("db",))
def check_limits(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """Compare the stored limits with the env defaults; report suspend and private_only."""

    def judge(state: MetadataState, exp: Expected) -> CheckResult:
        row = state.tenant(exp.tenant)
        if row is None:
            return _no_row(cid, exp)
        evidence = {"limits": dict(row.limits), "flags": dict(row.flags), "env_defaults": dict(exp.limits)}
        if row.suspend:
            return CheckResult(
                cid, Status.FAIL, summary=f"Tenant {exp.tenant!r} is suspended: Realtime refuses every connection.",
                detail="suspend = true gives 'Realtime was disabled for this tenant' (403) on the handshake.",
                remedy=f"rtbook tenant apply --yes --tenant {exp.tenant} --limit suspend=false  (or UPDATE "
                f"_realtime.tenants SET suspend = false WHERE external_id = '{exp.tenant}';)",
                cause="tenant.suspended", evidence=evidence,
            )
        warnings: list[str] = []
        remedies: list[str] = []
        for column, value in row.limits.items():
            if column in _SEEDED_LIMITS and value is not None and value <= 0:
                warnings.append(f"{column} is {value}: every client hits the limit")
                remedies.append(f"--limit {column}={exp.limits.get(column, LIMIT_COLUMNS[column][1])}")
        if row.limits.get("max_concurrent_users") == 1:
            warnings.append("max_concurrent_users is 1: a second client is refused")
            remedies.append(f"--limit max_concurrent_users={exp.limits['max_concurrent_users']}")
        env_set = {c for c, (env, _d) in LIMIT_COLUMNS.items() if env and exp.sources.get(env)}
        for column in sorted(env_set):
            stored = row.limits.get(column)
            if stored is not None and stored != exp.limits[column]:
                warnings.append(f"{column} is {stored} but {LIMIT_COLUMNS[column][0]} says {exp.limits[column]} "
                                "(the seed would reset it on the next start)")
        if row.private_only:
            warnings.append("private_only is on: public channels are refused ('PrivateOnly: This project only "
                            "allows private channels')")
            remedies.append("--limit private_only=false")
        shown = ", ".join(f"{k}={v}" for k, v in row.limits.items() if v is not None)
        if warnings:
            return CheckResult(
                cid, Status.WARN, summary="; ".join(warnings) + ".", detail=f"Stored limits: {shown}.",
                remedy=(f"rtbook tenant apply --yes --tenant {exp.tenant} " + " ".join(dict.fromkeys(remedies)))
                if remedies else "Set the TENANT_MAX_* variables to the values you want, or change the row.",
                cause="tenant.private_only" if row.private_only else cid, evidence=evidence,
            )
        return CheckResult(cid, Status.PASS, summary=f"Limits are sane: {shown}.", evidence=evidence)

    return _tenant_body(target, cid, judge)
