"""The run history index and diff on hand-built records (SQLite in a temporary folder).

The end-to-end version, on records of a real healthy and a real broken sandbox run, is
tests/integration/test_history_sandbox.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtbook.exceptions import ConfigError, InputError
from rtbook.history.diff import diff_runs
from rtbook.history.index import HistoryIndex, snapshot_from_record


def _record(folder: Path, started: str, results: dict[str, tuple[str, dict[str, float]]],
            params: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True)
    notebooks = [{"notebook": "01_setup", "results": [
        {"id": cid, "title": cid, "status": status, "summary": f"{cid} is {status}", "metrics": metrics}
        for cid, (status, metrics) in results.items()
    ]}]
    failed = any(s in ("fail", "error") for s, _ in results.values())
    (folder / "summary.json").write_text(json.dumps({
        "started": started, "exit_code": 1 if failed else 0,
        "parameters": params or {"target_kind": "sandbox"}, "notebooks": notebooks,
    }))
    return folder


def test_index_lists_runs_per_target_and_diff_names_what_broke_fixed_and_moved(tmp_path: Path) -> None:
    a = _record(tmp_path / "r1", "2026-12-01T10:00:00+00:00",
                {"gateway.websocket": ("pass", {"connect_ms": 20.0}), "db.wal_level": ("fail", {})})
    b = _record(tmp_path / "r2", "2026-12-02T10:00:00+00:00",
                {"gateway.websocket": ("fail", {"connect_ms": 400.0}), "db.wal_level": ("pass", {}),
                 "realtime.join": ("warn", {})})
    other = _record(tmp_path / "r3", "2026-12-03T10:00:00+00:00", {"compose.realtime": ("pass", {})},
                    {"target_kind": "stack", "stack_dir": "/srv/supabase"})
    with HistoryIndex(output_dir=tmp_path / "out") as index:
        for rec in (a, b, other, b):  # indexing the same record twice replaces it
            index.add_record(rec)
        assert [s.id for s in index.runs("sandbox")] == ["r2", "r1"]
        assert [s.id for s in index.runs("stack /srv/supabase")] == ["r3"]
        stored = index.resolve("r2")
        assert stored.counts()["fail"] == 1 and stored.metrics[("gateway.websocket", "connect_ms")] == 400.0
        assert index.resolve(str(a)).statuses == snapshot_from_record(a).statuses
        with pytest.raises(InputError, match="'nope' is neither a run record folder nor a run id"):
            index.resolve("nope")
    assert (tmp_path / "out" / "history.sqlite").is_file()
    diff = diff_runs(snapshot_from_record(a), snapshot_from_record(b))
    assert [c.check_id for c in diff.broke] == ["gateway.websocket"]
    assert [c.check_id for c in diff.fixed] == ["db.wal_level"]
    assert [(c.check_id, c.before, c.after) for c in diff.changed] == [("realtime.join", None, "warn")]
    assert [(m.check_id, m.name, m.before_ms, m.after_ms) for m in diff.latencies] == [
        ("gateway.websocket", "connect_ms", 20.0, 400.0)]
    text = str(diff)
    assert "broke (1):\n  gateway.websocket: pass -> fail" in text and "20 ms -> 400 ms" in text
    assert diff_runs(snapshot_from_record(a), snapshot_from_record(a)).empty


def test_small_latency_wobbles_are_not_moves(tmp_path: Path) -> None:
    a = _record(tmp_path / "a", "2026-12-01T10:00:00+00:00", {"x.y": ("pass", {"ms": 1.0, "big": 2000.0})})
    b = _record(tmp_path / "b", "2026-12-01T11:00:00+00:00", {"x.y": ("pass", {"ms": 3.0, "big": 2300.0})})
    assert diff_runs(snapshot_from_record(a), snapshot_from_record(b)).latencies == []


def test_failing_since_is_the_start_of_the_unbroken_failing_streak(tmp_path: Path) -> None:
    days = [f"2026-12-0{d}T10:00:00+00:00" for d in range(1, 5)]
    with HistoryIndex(f"sqlite:///{tmp_path / 'h.sqlite'}") as index:
        index.add_record(_record(tmp_path / "d1", days[0], {"a.x": ("fail", {}), "b.x": ("fail", {})}))
        index.add_record(_record(tmp_path / "d2", days[1], {"a.x": ("pass", {}), "b.x": ("error", {})}))
        index.add_record(_record(tmp_path / "d3", days[2], {"a.x": ("fail", {}), "b.x": ("fail", {})}))
        since = index.failing_since("sandbox", ["a.x", "b.x", "c.x"], days[3])
    # a.x passed on day 2, so its streak starts on day 3; b.x has failed or errored since day 1;
    # c.x was not run before, so it fails since this run.
    assert since == {"a.x": days[2], "b.x": days[0], "c.x": days[3]}


def test_a_bad_history_url_is_one_line_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not an SQLAlchemy database URL.*RTBOOK_HISTORY_URL"):
        HistoryIndex("not a url")
    with pytest.raises(InputError, match=r"no readable summary\.json"):
        snapshot_from_record(tmp_path)


def test_check_output_is_indexed_and_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from rtbook.cli import main
    from tests.conftest import CORPUS, require

    official = CORPUS / "official" / "2026-09-1f37f2a"
    require(official.is_dir(), f"corpus not found at {official}")
    stack = tmp_path / "stack"
    shutil.copytree(official, stack)
    shutil.copy(stack / "env.example", stack / ".env")
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    monkeypatch.setenv("RTBOOK_HISTORY_URL", url)
    code = main(["check", "--stack", str(stack), "--no-docker", "--output", str(tmp_path / "report.txt")])
    capsys.readouterr()
    with HistoryIndex(url) as index:
        (snap,) = index.runs()
    assert snap.kind == "check" and snap.target == f"stack {stack.resolve()}"
    assert snap.record == str((tmp_path / "report.txt").resolve())
    assert snap.exit_code == code and len(snap.statuses) > 5
    assert snap.counts()["warn"] >= 1  # the published example secrets in env.example
    assert main(["history"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"stack {stack.resolve()}" and f"{snap.id}" in out
    assert ("PASSED" if code == 0 else "FAILED") in out
