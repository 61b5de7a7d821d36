"""What 'rtbook check' writes when a signal stops it: the results so far, marked incomplete, in each format."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from rtbook.cli._interrupt import write_interrupted_report
from rtbook.interrupt import Interrupted
from rtbook.results import CheckResult, Report, Status
from rtbook.secrets import Redactor

SECRET = "s3cr3t-canary-value-0123456789"


def _report() -> Report:
    return Report([CheckResult("env.jwt_secret", Status.PASS, summary="ok"),
                   CheckResult("db.connect", Status.FAIL, summary=f"password {SECRET} refused")], title="t")


@pytest.mark.parametrize("fmt", ["json", "junit", "text"])
def test_the_partial_report_says_it_is_incomplete_and_keeps_the_results(fmt: str, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    redactor = Redactor()
    redactor.add(SECRET)
    write_interrupted_report(_report(), fmt, str(out), redactor, Interrupted(signal.SIGTERM))
    text = out.read_text()
    assert SECRET not in text and SECRET not in capsys.readouterr().out
    if fmt == "json":
        data = json.loads(text)
        assert data["complete"] is False and data["interrupted"] == "SIGTERM"
        assert [r["id"] for r in data["results"]] == ["env.jwt_secret", "db.connect"]
    elif fmt == "junit":
        root = ET.fromstring(text.split("?>", 1)[1])  # still well-formed XML
        assert root.get("tests") == "2" and root.get("failures") == "1"
        assert "<!-- rtbook: INCOMPLETE: interrupted by SIGTERM after 2 result(s) -->" in text
    else:
        assert text.rstrip().endswith("INCOMPLETE: interrupted by SIGTERM after 2 result(s)")
        assert "db.connect" in text
