import json
from xml.etree import ElementTree as ET

import pytest

from rtbook.exceptions import ChecksFailedError, ConfigError
from rtbook.registry import register, run_checks, run_one, select_checks
from rtbook.results import CheckResult, Report, Status
from rtbook.secrets import Redactor
from rtbook.target import Target


def _report() -> Report:
    return Report(
        [
            CheckResult("a.ok", Status.PASS, "A", summary="fine"),
            CheckResult("a.warn", Status.WARN, "W", summary="demo key", remedy="rotate JWT_SECRET in .env"),
            CheckResult("b.bad", Status.FAIL, "B", summary="broken", detail="x implies y", remedy="set X=1"),
            CheckResult("b.skip", Status.SKIP, "S", summary="no db"),
        ],
        title="t",
    )


def test_counts_and_gate():
    report = _report()
    assert report.counts() == {"pass": 1, "warn": 1, "fail": 1, "skip": 1, "error": 0}
    assert not report.ok
    with pytest.raises(ChecksFailedError, match=r"b\.bad \(fail\)"):
        report.raise_for_failures()
    Report([r for r in report if not r.failed]).raise_for_failures()
    with pytest.raises(ChecksFailedError, match=r"a\.warn"):
        Report([r for r in report if not r.failed]).raise_for_failures(strict=True)


def test_text_html_json_junit_renderings():
    report = _report()
    text = str(report)
    assert "[FAIL] b.bad: broken" in text and "remedy: set X=1" in text
    assert "1 passed, 1 failed, 1 warned, 1 skipped" in text
    html = report._repr_html_()
    assert "rtbook-fail" in html and "<code>b.bad</code>" in html
    data = json.loads(report.to_json())
    assert data["summary"]["fail"] == 1
    assert {"id", "status", "title", "summary", "detail", "remedy"} <= set(data["results"][0])
    assert Report.from_dict(data)[2] == report[2]
    root = ET.fromstring(report.to_junit())
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["a.ok", "a.warn", "b.bad", "b.skip"]
    assert cases[2].find("failure") is not None and cases[3].find("skipped") is not None


def test_redacted_result_hides_values():
    r = CheckResult(
        "x.y", Status.FAIL, summary="secret is hunter2hunter2", evidence={"JWT_SECRET": "abc", "n": ["hunter2hunter2"]}
    )
    red = r.redacted(Redactor(["hunter2hunter2"]))
    dumped = json.dumps(red.to_dict())
    assert "hunter2hunter2" not in dumped and "abc" not in dumped


@pytest.fixture
def scratch_registry():
    from rtbook.registry import _REGISTRY

    before = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(before)


def test_crashing_check_becomes_error_result_and_skips_on_missing_need(scratch_registry):
    @register("test.crash", "Crashes")
    def crash(target, cid):
        raise RuntimeError("boom with canary-secret-value-123")

    @register("test.needs_db", "Needs db", needs=("db",))
    def needs_db(target, cid):
        raise AssertionError("must not run")

    target = Target(env={"DB_PASSWORD": "canary-secret-value-123"})
    [res] = run_one(next(s for s in select_checks(["test.crash"])), target)
    assert res.status is Status.ERROR and "RuntimeError" in res.summary
    assert "canary-secret-value-123" not in res.summary + res.detail
    report = run_checks(target, only="test.needs_db")
    assert report[0].status is Status.SKIP and "--db-url" in report[0].summary


def test_using_provider_stands_in_or_passes_its_context(scratch_registry):
    """A provider's CheckResult replaces the check; anything else is handed to it with the check's own id."""
    seen: list[tuple[str, object]] = []

    def provider(target, cid):
        if target.tenant == "absent":
            return CheckResult(cid, Status.SKIP, summary="Skipped: nothing to load.")
        return {"loaded_for": cid}

    @register("test.uses", "Uses a provider", using=provider)
    def uses(target, cid, ctx):
        seen.append((cid, ctx))
        return CheckResult(cid, Status.PASS, summary="ran")

    [skipped] = run_checks(Target(tenant="absent"), only="test.uses")
    assert skipped.status is Status.SKIP and skipped.id == "test.uses" and skipped.title == "Uses a provider"
    assert seen == []
    [ran] = run_checks(Target(tenant="present"), only="test.uses")
    assert ran.status is Status.PASS and seen == [("test.uses", {"loaded_for": "test.uses"})]


def test_register_rejects_bad_ids(scratch_registry):
    with pytest.raises(ConfigError):
        register("nodots", "x")
