"""From a symptom a user sees to the checks that decide it, a verdict and the fix.

The troubleshooting notebook does not probe anything new: it reads the results the run's
earlier notebooks saved and, for each symptom, walks the deciding checks in the order that
separates the causes. The first failing one is the verdict; its remedy is the fix, with a link to
the notebook that runs (and explains) that check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from rtbook.exceptions import ConfigError
from rtbook.report.rootcause import RootCause, offerable_remedy, root_causes
from rtbook.results import CheckResult, Report, Status

__all__ = ['SYMPTOMS', 'Symptom', 'deciding_prefixes', 'diagnose', 'matches']



@dataclass(frozen=True)
class Symptom:
    """A problem as the user sees it, and the checks that decide its cause (most likely first)."""

    key: str
    text: str
    why: str
    deciding: tuple[str, ...]


SYMPTOMS: tuple[Symptom, ...] = (
    Symptom(
        "tenant_not_found",
        'Clients get 404 "Tenant not found" (or the log says TenantNotFound)',
        "Realtime takes the tenant from the first label of the request's Host header and looks it up in "
        "_realtime.tenants; a renamed container, a proxy rewriting Host, or a seed that did not run all "
        "end here.",
        (
            "compose.realtime.tenant_consistency",
            "docker.realtime.tenant_host",
            "compose.realtime.seed_self_host",
            "tenant.row",
            "kong.realtime_preserve_host",
            "envoy.realtime_host_rewrite",
            "kong.realtime_ws",
            "kong.realtime_rest",
            "envoy.realtime_ws",
            "gateway.websocket",
            "gateway.rest",
            "docker.realtime.logs",
            "realtime.health",
        ),
    ),
    Symptom(
        "socket_closes",
        "The WebSocket closes right after connecting, or the channel goes to CHANNEL_ERROR at once",
        "The upgrade must reach Realtime through the gateway with a key it accepts, and the JWT must be "
        "signed with the secret Realtime verifies against. A private channel (config.private: true) also "
        "needs a SELECT policy on realtime.messages for the token's role and topic.",
        (
            "kong.realtime_ws",
            "envoy.realtime_ws",
            "kong.realtime_auth",
            "gateway.websocket",
            "gateway.key_auth",
            "env.api_keys",
            "compose.realtime.jwt_secret",
            "tenant.jwt_secret",
            "docker.realtime.running",
            "realtime.join",
            "realtime.private",
            "realtime.bad_token",
        ),
    ),
    Symptom(
        "no_changes",
        "The channel is SUBSCRIBED but no postgres_changes events arrive",
        "Changes flow from the WAL through Realtime's replication slot and the supabase_realtime "
        "publication, filtered by RLS for the subscriber's role.",
        (
            "db.wal_level",
            "db.wal2json",
            "db.publication",
            "db.replica_identity",
            "db.rls",
            "db.realtime_slots",
            "db.replication_capacity",
            "tenant.extension",
            "tenant.db_settings",
            "realtime.postgres_changes",
            "realtime.rls",
        ),
    ),
    Symptom(
        "high_memory",
        "Realtime uses a lot of memory, restarts, or is OOM-killed",
        "Memory grows with connections, channels and replication work allowed by the tenant limits; "
        "the container's limits must leave room for them.",
        (
            "docker.realtime.running",
            "docker.realtime.limits",
            "tenant.limits",
            "db.realtime_connections",
            "db.realtime_slots",
        ),
    ),
)

_BY_KEY = {s.key: s for s in SYMPTOMS}


def _symptoms(symptom: str) -> list[Symptom]:
    if not symptom:
        return list(SYMPTOMS)
    if symptom not in _BY_KEY:
        raise ConfigError(f"unknown symptom {symptom!r}; choose one of {', '.join(_BY_KEY)} (or empty for all)")
    return [_BY_KEY[symptom]]


def deciding_prefixes(symptom: str = "") -> tuple[str, ...]:
    """Every check id that decides ``symptom`` (all symptoms when empty), without duplicates."""
    out: list[str] = []
    for s in _symptoms(symptom):
        out.extend(p for p in s.deciding if p not in out)
    return tuple(out)


def matches(check_id: str, deciding: str) -> bool:
    """True when ``check_id`` is the deciding check or one of its sub-results."""
    return check_id == deciding or check_id.startswith(deciding + ".")


def _root_for(check_id: str, roots: Sequence[RootCause]) -> RootCause | None:
    for rc in roots:
        if rc.check_id == check_id or any(s.id == check_id for s in rc.symptoms):
            return rc
    return None


def _verdict(symptom: Symptom, results: Report, roots: Sequence[RootCause] = ()) -> CheckResult:
    from rtbook.runbook.notebooks import notebook_for

    seen: list[CheckResult] = []
    for deciding in symptom.deciding:
        seen.extend(r for r in results if matches(r.id, deciding) and r not in seen)
    cid = f"troubleshoot.{symptom.key}"
    ran = [r for r in seen if r.status is not Status.SKIP]
    evidence = {"deciding": {r.id: r.status.value for r in seen}, "symptom": symptom.text}
    if not ran:
        return CheckResult(
            cid,
            Status.SKIP,
            symptom.text,
            summary="None of the checks that decide this symptom ran; run 01 to 04 first "
            "(or pass run_dir pointing at a run folder).",
            detail=f"Deciding checks: {', '.join(symptom.deciding)}.",
            evidence=evidence,
        )
    failing = [r for r in ran if r.failed]
    if failing:
        # The symptom is explained by the root cause of its first failing deciding check (which may be a check
        # outside this symptom's list): the same cause, and the same one remedy, as the run's root-cause block.
        root = _root_for(failing[0].id, roots)
        cause = root.result if root is not None else failing[0]
        remedy = root.remedy if root is not None else offerable_remedy(cause.remedy, results)
        notebook = notebook_for(cause.id)
        counts = {st: sum(1 for r in seen if r.status.value == st) for st in ("pass", "warn", "skip")}
        return CheckResult(
            cid,
            Status.FAIL,
            symptom.text,
            summary=f"Explained by {cause.id}: {cause.summary or cause.title}",
            detail=f"{symptom.why}\nDeciding checks: {len(failing)} failing ({', '.join(r.id for r in failing)}), "
            f"{counts['pass']} passed, {counts['warn']} warned, {counts['skip']} skipped.",
            remedy=(remedy or f"See {cause.id} in {notebook}.") + f" (details and re-check: {notebook}.ipynb)",
            evidence=evidence,
            cause=cause.cause,
            see_also=tuple(dict.fromkeys([cause.id, *(r.id for r in failing)])),
        )
    warned = [r for r in ran if r.status is Status.WARN]
    not_run = [d for d in symptom.deciding if not any(matches(r.id, d) for r in ran)]
    summary = f"No deciding check failed ({len(ran)} ran)"
    if warned:
        summary += f"; look at the warnings first: {', '.join(r.id for r in warned)}"
    if not_run:
        summary += f"; not run: {', '.join(not_run)}"
    # A passing postgres_changes check without the probe proved the subscription, not the delivery.
    unproven = [r.id for r in ran if str(r.evidence.get("delivery", "")).startswith("not proven")]
    if unproven:
        summary += (f"; delivery NOT proven by {', '.join(unproven)} (rtbook writes nothing by default; "
                    "install the probe with 'rtbook probe install --yes' and run again)")
    return CheckResult(
        cid,
        Status.WARN if warned else Status.PASS,
        symptom.text,
        summary=summary + ".",
        detail=symptom.why,
        remedy=warned[0].remedy if warned else "",
        evidence=evidence,
        see_also=tuple(r.id for r in warned),
    )


def diagnose(results: Sequence[CheckResult], symptom: str = "") -> Report:
    """One ``troubleshoot.<symptom>`` result per symptom: fail names the deciding check and its fix."""
    report = results if isinstance(results, Report) else Report(results)
    roots = root_causes(report, warnings=False)
    verdicts: list[CheckResult] = []
    given: set[str] = set()
    for s in _symptoms(symptom):
        v = _verdict(s, report, roots)
        root = v.see_also[0] if v.failed and v.see_also else ""
        if root and root in given:
            # One cause, one remedy: a second symptom of the same root cause points to it instead of repeating it.
            v = dataclasses.replace(v, remedy=f"The same root cause as above ({root}): apply its remedy once.")
        given.add(root)
        verdicts.append(v)
    return Report(verdicts, title="Troubleshooting")
