"""The probe's plans from a given state (pure logic); the SQL itself runs in tests/integration/test_probe.py."""

from __future__ import annotations

import dataclasses

import pytest

from rtbook import probe, probe_sql
from rtbook.checks.realtime import CdcFacts, lifecycle_budget
from rtbook.target import Target

ABSENT = probe.ProbeState(
    publication="supabase_realtime", publication_exists=True, publication_all_tables=False,
    publication_tables=("public.todos",), schema_exists=False, table_exists=False, in_publication=False,
)
INSTALLED = dataclasses.replace(
    ABSENT, publication_tables=("public.todos", "rtbook_probe.events"), schema_exists=True, table_exists=True,
    in_publication=True, rls=True, replica_identity="f",
    policies=("rtbook_probe_anon_public", "rtbook_probe_authenticated_own"),
    comment="rtbook probe v1; installed 2026-12-01T10:00:00Z; rtbook probe remove --yes drops it",
)


def test_a_fresh_install_adds_the_table_to_the_publication_once_at_the_end() -> None:
    statements, notes, blocked = probe._install_steps(ABSENT)
    assert not blocked
    assert statements == probe_sql.install_statements("supabase_realtime")
    assert statements[-1] == "ALTER PUBLICATION supabase_realtime ADD TABLE rtbook_probe.events"
    assert sum(s.startswith("ALTER PUBLICATION") for s in statements) == 1
    assert any("within 60 s" in n for n in notes)


def test_an_installed_probe_plans_nothing() -> None:
    assert INSTALLED.installed
    assert probe._install_steps(INSTALLED) == ([], [], "")
    plan = probe.ProbePlan("install", INSTALLED, [])
    assert plan.empty and plan.sql() == "" and "Nothing to do: the probe is installed." in str(plan)


def test_an_incomplete_probe_is_completed_without_touching_the_publication_again() -> None:
    no_policy = dataclasses.replace(INSTALLED, policies=("rtbook_probe_anon_public",))
    assert not no_policy.installed
    statements, notes, _ = probe._install_steps(no_policy)
    # Same statements as a fresh install, except the install-time comment: the probe joined the publication earlier.
    assert statements == [s for s in probe_sql.object_statements() if "COMMENT ON TABLE" not in s]
    assert not any(s.startswith("ALTER PUBLICATION") for s in statements)
    assert any("incomplete" in n for n in notes)


@pytest.mark.parametrize(("change", "reason"), [
    ({"publication_exists": False}, "does not exist"),
    ({"missing_roles": ("anon",)}, "anon"),
    ({"read_only": True}, "read-only"),
])
def test_install_is_blocked_when_it_cannot_work(change: dict[str, object], reason: str) -> None:
    statements, _, blocked = probe._install_steps(dataclasses.replace(ABSENT, **change))  # type: ignore[arg-type]
    assert statements == [] and reason in blocked


def test_a_for_all_tables_publication_is_not_altered() -> None:
    statements, notes, _ = probe._install_steps(dataclasses.replace(ABSENT, publication_all_tables=True))
    assert not any(s.startswith("ALTER PUBLICATION") for s in statements)
    assert any("FOR ALL TABLES" in n for n in notes)
    removal, _, _ = probe._remove_steps(dataclasses.replace(INSTALLED, publication_all_tables=True))
    assert not any(s.startswith("ALTER PUBLICATION") for s in removal)


def test_remove_takes_it_out_of_the_publication_and_keeps_a_schema_with_foreign_objects() -> None:
    statements, _, _ = probe._remove_steps(INSTALLED)
    assert statements == [probe_sql.drop_from_publication_sql("supabase_realtime"), probe_sql.drop_table_sql(),
                          probe_sql.drop_schema_sql()]
    kept, notes, _ = probe._remove_steps(dataclasses.replace(INSTALLED, other_objects=("mine",)))
    assert probe_sql.drop_schema_sql() not in kept and any("is kept" in n for n in notes)
    assert probe._remove_steps(ABSENT) == ([], [], "")


def test_the_plan_text_is_the_exact_sql_in_one_transaction() -> None:
    statements, notes, _ = probe._install_steps(ABSENT)
    plan = probe.ProbePlan("install", ABSENT, statements, notes, target_name="staging")
    sql = plan.sql()
    assert sql.startswith("BEGIN;\n") and sql.endswith("COMMIT;") and sql.count(";\n") == len(statements) + 1
    text = str(plan)
    assert "(dry run)" in text and "before: schema rtbook_probe: absent" in text
    assert "Run it with: rtbook probe install --yes" in text
    run = plan.text(dry_run=False)
    assert "dry run" not in run and "Run it with" not in run and "SQL run (one transaction)" in run
    assert plan.changes_publication and plan.to_dict()["changes_publication"] is True


def test_the_install_time_is_read_back_from_the_comment() -> None:
    assert probe_sql.parse_installed_at(INSTALLED.comment) == "2026-12-01T10:00:00Z"
    assert INSTALLED.installed_at is not None and INSTALLED.installed_at.hour == 10
    assert probe_sql.parse_installed_at("someone else's comment, installed 2026-12-01T10:00:00Z") is None
    assert probe_sql.parse_installed_at(None) is None
    quoted = probe_sql.install_statements('My "Pub"')[-1]
    assert quoted == 'ALTER PUBLICATION "My ""Pub""" ADD TABLE rtbook_probe.events'


def test_the_wait_for_realtime_is_bounded_and_only_when_realtime_predates_the_probe() -> None:
    assert lifecycle_budget(Target(timeout=10)) == 75
    assert lifecycle_budget(Target(timeout=2)) == 16
    fresh = CdcFacts("logical", (), probe_age_s=10, stale_sessions=1)
    assert fresh.recheck_pending and not fresh.has_slot
    assert not dataclasses.replace(fresh, stale_sessions=0).recheck_pending  # Realtime started after the install
    assert not dataclasses.replace(fresh, probe_age_s=70).recheck_pending  # its 60 s re-check has happened
    assert not dataclasses.replace(fresh, probe_age_s=None).recheck_pending
