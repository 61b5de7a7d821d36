"""rtbook.load's pure logic: the delivery ledger, exact histogram merges, thresholds, scenario bounds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtbook.exceptions import ConfigError
from rtbook.load.generator import Endpoint, ProcessResult
from rtbook.load.histograms import Histograms
from rtbook.load.ledger import DeliveryCounts, Ledger, Receipt
from rtbook.load.runner import limits_hit, merge
from rtbook.load.scenario import Scenario
from rtbook.load.thresholds import evaluate, parse_threshold

# ------------------------------------------------------------------ ledger


def test_every_expected_delivery_is_delivered_or_lost() -> None:
    ledger = Ledger(late_after_us=1000)
    receivers = {"r1", "r2", "r3"}
    for seq in range(10):
        ledger.sent("s", seq, receivers)
    for seq in range(10):
        for r in ("r1", "r2"):
            ledger.received(r, "s", seq, 10)
    ledger.received("r3", "s", 0, 10)
    c = ledger.counts()
    assert (c.sent, c.expected, c.delivered, c.lost) == (10, 30, 21, 9)
    assert ledger.lost_by_receiver() == {"r3": 9}


def test_duplicates_reordering_and_late_are_counted_apart() -> None:
    ledger = Ledger(late_after_us=1000)
    for seq in range(3):
        ledger.sent("s", seq, {"r"})
    assert ledger.received("r", "s", 2, 10) is Receipt.DELIVERED
    assert ledger.received("r", "s", 0, 5000) is Receipt.LATE  # older than the highest seen: out of order
    assert ledger.received("r", "s", 0, 10) is Receipt.DUPLICATE
    c = ledger.counts()
    assert (c.delivered, c.lost, c.duplicated, c.out_of_order, c.late) == (2, 1, 1, 1, 1)


def test_a_receiver_that_joined_after_the_send_is_not_owed_the_message() -> None:
    ledger = Ledger(late_after_us=1000)
    ledger.sent("s", 0, {"r1"})
    assert ledger.received("r2", "s", 0, 10) is Receipt.UNEXPECTED
    c = ledger.counts()
    assert (c.expected, c.delivered, c.lost, c.unexpected) == (1, 0, 1, 1)


def test_the_caller_says_who_is_owed_and_a_message_is_sent_once() -> None:
    ledger = Ledger(late_after_us=1000)
    ledger.sent("s", 0, {"s", "r"})  # a presence tracker gets its own diff
    assert ledger.counts().expected == 2
    assert ledger.received("s", "s", 0, 10) is Receipt.DELIVERED
    with pytest.raises(ValueError, match="already"):
        ledger.sent("s", 0, {"r"})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.booleans()), max_size=200), st.integers(0, 2**32))
def test_counts_add_up_whatever_arrives(arrivals: list[tuple[int, int, bool]], seed: int) -> None:
    rng = random.Random(seed)
    ledger = Ledger(late_after_us=500)
    receivers = {f"r{i}" for i in range(4)}
    for seq in range(30):
        ledger.sent("s", seq, set(rng.sample(sorted(receivers), rng.randint(0, 4))))
    for r, seq, slow in arrivals:
        ledger.received(f"r{r}", "s", seq, 1000 if slow else 10)
    c = ledger.counts()
    assert c.expected == c.delivered + c.lost
    assert c.late <= c.delivered and c.out_of_order <= c.delivered
    assert sum(ledger.lost_by_receiver().values()) == c.lost


# ------------------------------------------------------------------ histograms


def test_merged_histograms_equal_one_histogram_of_everything() -> None:
    rng = random.Random(7)
    values = [rng.randint(1, 5_000_000) for _ in range(5000)]
    whole, a, b = Histograms(), Histograms(), Histograms()
    for i, v in enumerate(values):
        whole.record("broadcast", v)
        (a if i % 2 else b).record("broadcast", v)
    merged = Histograms.merged([Histograms.decode(a.encode()), Histograms.decode(b.encode())])
    assert merged.percentiles("broadcast") == whole.percentiles("broadcast")
    p = whole.percentiles("broadcast")
    assert p is not None and p.count == 5000
    # Exact to three significant figures: the recorded median is within 0.1 % of the true one.
    true_median = sorted(values)[2499] / 1000
    assert abs(p.p50_ms - true_median) <= true_median * 0.001 + 0.001


def test_the_histogram_log_reads_back_with_its_tags(tmp_path: Path) -> None:
    h = Histograms()
    for v in (100, 2000, 30_000):
        h.record("join", v)
    h.record("broadcast", 1234)
    path = tmp_path / "latency.hlog"
    h.write_log(path)
    text = path.read_text()
    assert "#[Histogram log format version 1.3]" in text and "Tag=join," in text and "Tag=broadcast," in text
    back = Histograms.read_log(path)
    assert back.names() == ["broadcast", "join"]
    assert back.percentiles("join") == h.percentiles("join")


def test_values_outside_the_range_are_clamped_not_lost() -> None:
    h = Histograms()
    h.record("x", 0)
    h.record("x", 10**12)
    p = h.percentiles("x")
    assert p is not None and p.count == 2 and 59_000 < p.max_ms < 61_000


# ------------------------------------------------------------------ thresholds


@pytest.mark.parametrize(("text", "name", "op", "limit"), [
    ("broadcast.p99<50ms", "broadcast.p99", "<", 50.0),
    ("broadcast.p99.9 <= 0.2s", "broadcast.p99.9", "<=", 200.0),
    ("lost==0", "lost", "==", 0.0),
    ("errors.join<3", "errors.join", "<", 3.0),
])
def test_thresholds_parse(text: str, name: str, op: str, limit: float) -> None:
    t = parse_threshold(text)
    assert (t.name, t.op, t.limit) == (name, op, limit)


@pytest.mark.parametrize("text", ["lost=0", "foo<3", "lost==0ms", "broadcast.p42<3ms", "", "x" * 300])
def test_bad_thresholds_are_refused_with_the_forms(text: str) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        parse_threshold(text)


def test_thresholds_judge_the_numbers_and_a_missing_measure_fails() -> None:
    ts = [parse_threshold("broadcast.p99<50ms"), parse_threshold("lost==0"), parse_threshold("presence.p50<1ms")]
    verdicts = evaluate(ts, {"broadcast.p99": 12.5, "lost": 3})
    assert [v.ok for v in verdicts] == [True, False, False]
    assert "lost = 3" in verdicts[1].line and "VIOLATED" in verdicts[1].line
    assert "nothing was measured" in verdicts[2].line


# ------------------------------------------------------------------ scenario


@pytest.mark.parametrize(("field", "value"), [("rate", 1e9), ("duration_s", 0), ("connections", 0),
                                              ("processes", 100), ("payload_bytes", -1), ("rate", True)])
def test_out_of_range_numbers_are_refused_with_the_range(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match="out of range; give"):
        Scenario(**{field: value})  # type: ignore[arg-type]


def test_shares_cover_the_scenario_exactly() -> None:
    sc = Scenario(kind="broadcast", topics=5, rate=100.0, processes=2)
    shares = [sc.share(i, 2) for i in range(2)]
    assert sum(s.topics for s in shares) == 5
    assert sum(s.rate for s in shares) == pytest.approx(100.0)
    conn = Scenario(kind="connect", connections=7, processes=3)
    assert sum(conn.share(i, 3).connections for i in range(3)) == 7
    with pytest.raises(ConfigError, match="at most one per topic"):
        Scenario(kind="broadcast", topics=1, processes=2)


# ------------------------------------------------------------------ merge, limits, secrets


def _part(sent: int, lost: int, values: list[int], errors: dict[str, int]) -> ProcessResult:
    h = Histograms()
    for v in values:
        h.record("broadcast", v)
    counts = DeliveryCounts(sent=sent, expected=2 * sent, delivered=2 * sent - lost, lost=lost)
    return ProcessResult(counts, h.encode(), errors, 3, 3, 0, 0.5, 2.0, [sent, 0], [2 * sent - lost, 0], [2 * sent, 0])


def test_process_results_merge_to_their_sum() -> None:
    a = _part(10, 1, [1000, 2000], {"join: Too many joins per second": 1})
    b = _part(5, 0, [3000], {"join: Too many joins per second": 2})
    b2 = ProcessResult.from_dict(b.to_dict())
    result = merge(Scenario(), "http://127.0.0.1:1/realtime/v1", [a, b2])
    assert result.counts == a.counts + b.counts
    assert result.errors == {"join: Too many joins per second": 3}
    assert result.sent_per_s == [15, 0] and result.expected_per_s == [30, 0]
    assert result.opened == 6 and result.cpu_s == 1.0
    p = result.histograms.percentiles("broadcast")
    assert p is not None and p.count == 3
    numbers = result.numbers()
    assert numbers["lost"] == 1 and numbers["errors.join"] == 3


def test_the_limit_hit_is_named_with_a_concrete_remedy() -> None:
    hits = limits_hit({"system: Too many messages per second": 4, "disconnect: socket closed during the run": 1},
                      "realtime-dev", {"max_events_per_second": 100})
    assert len(hits) == 1
    assert hits[0]["limit"] == "max_events_per_second"
    assert "now 100" in hits[0]["why"]
    assert "--limit max_events_per_second=200" in hits[0]["remedy"] and "<" not in hits[0]["remedy"]


def test_the_endpoint_never_shows_its_key() -> None:
    canary = "eyJcanary.key.value"
    ep = Endpoint("http://127.0.0.1:8000/realtime/v1", None, "http://127.0.0.1:8000/realtime/v1 (gateway)",
                  apikey=canary, token=canary)
    assert canary not in repr(ep) and canary not in ep.label
    assert "apikey=eyJcanary" in ep.url() and ep.url().startswith("ws://127.0.0.1:8000/realtime/v1/websocket?")


# ------------------------------------------------------------------ the command's refusals (no network)


@pytest.mark.parametrize(("argv", "words"), [
    (["--rate", "1e9"], "--rate 1000000000.0 is out of range; give 0.1 to 200000"),
    (["--scenario", "broadcast", "--processes", "2"], "at most one per topic"),
    (["--threshold", "p99<3"], "--threshold 'p99<3'"),
    (["--api-url", "http://10.9.8.7:8000"], "Add --i-own-this-target"),
])
def test_load_refuses_bad_input_in_one_line(argv: list[str], words: str, capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rtbook.cli import main

    monkeypatch.setenv("RTBOOK_HOME", str(tmp_path))  # no sandbox: nothing may be reached
    target = [] if "--api-url" in argv else ["--target", "sandbox"]
    code = main(["load", *target, *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err, err


def test_locustfile_flag_prints_an_existing_file(capsys: pytest.CaptureFixture[str]) -> None:
    from rtbook.cli import main

    assert main(["load", "--locustfile"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.name == "locustfile.py" and path.is_file()


# ------------------------------------------------------------------ mixes


def test_a_mix_splits_the_rate_by_weight_over_the_parts_that_send() -> None:
    from rtbook.load.scenario import Mix

    mix = Mix.from_mapping({"duration_s": 5, "rate": 100, "parts": [
        {"kind": "broadcast", "weight": 3}, {"kind": "presence", "weight": 1}, {"kind": "connect", "connections": 9},
    ]}, "mix.yml")
    assert [p.kind for p in mix.parts] == ["broadcast", "presence", "connect"]
    assert [p.rate for p in mix.parts[:2]] == [75.0, 25.0]
    assert all(p.duration_s == 5 for p in mix.parts) and mix.parts[2].connections == 9


@pytest.mark.parametrize(("data", "words"), [
    ({}, "needs 'parts:'"),
    ({"parts": [{"kind": "broadcast", "colour": 1}]}, "part 1: unknown key(s) colour"),
    ({"parts": [{"weight": 0}]}, "weight 0"),
    ({"parts": [{}] * 9}, "at most 8"),
    ({"nodes": 2, "parts": [{}]}, "unknown key(s) nodes"),
    ({"parts": [{"rate": 1e9}]}, "--rate 1000000000.0 is out of range"),
])
def test_bad_mixes_are_refused_naming_the_file_and_the_fault(data: dict[str, object], words: str) -> None:
    from rtbook.load.scenario import Mix

    with pytest.raises(ConfigError) as err:
        Mix.from_mapping(data, "mix.yml")
    assert words in str(err.value)


def test_bottlenecks_name_the_side_that_limited() -> None:
    from rtbook.load.runner import bottlenecks

    busy = merge(Scenario(), "x", [_part(10, 0, [1000], {})])
    busy.cpu_s, busy.wall_s = 1.9, 2.0
    assert "the load generator: it used 95%" in bottlenecks(busy)[0]
    proxy = merge(Scenario(), "x", [_part(10, 0, [1000], {"handshake: HTTP 502 Bad Gateway": 3})])
    assert bottlenecks(proxy) == ["the gateway or proxy in front of Realtime: upgrades refused with HTTP 502 Bad "
                                  "Gateway x3"]
    server = merge(Scenario(), "x", [_part(10, 4, [1000], {})])
    assert bottlenecks(server)[0].startswith("the server or the path to it: 4 lost")
    healthy = merge(Scenario(), "x", [_part(10, 0, [1000], {})])
    assert bottlenecks(healthy) == []


# ------------------------------------------------------------------ disconnects and reconnects


def test_the_reconnect_backoff_is_realtime_js_schedule() -> None:
    from rtbook.load.generator import reconnect_after_s

    # supabase/realtime-js v2.15.6 RECONNECT_INTERVALS [1000, 2000, 5000, 10000], then 10000 ms.
    assert [reconnect_after_s(t) for t in range(1, 8)] == [1.0, 2.0, 5.0, 10.0, 10.0, 10.0, 10.0]


def test_lost_pairs_say_who_lost_what_from_whom_and_add_up() -> None:
    ledger = Ledger(late_after_us=1000)
    for seq in range(4):
        ledger.sent("a", seq, {"r1", "r2"})
        ledger.sent("b", seq, {"r1"} if seq < 2 else set())  # r1 away for b's last two: not owed
    for seq in range(4):
        ledger.received("r1", "a", seq, 10)
    ledger.received("r2", "a", 3, 10)
    ledger.received("r1", "b", 1, 10)
    pairs = ledger.lost_pairs()
    assert pairs == {("a", "r2"): 3, ("b", "r1"): 1}
    assert sum(pairs.values()) == ledger.counts().lost


def _with_outages(part: ProcessResult, outages: list[dict[str, object]], lost_pairs: dict[str, int]) -> ProcessResult:
    part.outages = [dict(o) for o in outages]
    part.lost_by_pair = dict(lost_pairs)
    part.lost_around_outages = sum(lost_pairs.values())
    return part


def test_outages_survive_the_trip_between_processes_and_merge() -> None:
    a = _with_outages(_part(10, 3, [1000], {}), [
        {"socket": "p0-t0-s1", "down_s": 3.1, "up_s": 4.2, "attempts": 1, "delivered_after": 40}],
        {"p0-t0-s1 > p0-t0-r0": 3})
    b = _with_outages(_part(10, 2, [1000], {}), [
        {"socket": "p1-t0-r1", "down_s": 3.3, "up_s": None, "attempts": 2, "delivered_after": 0}],
        {"p1-t0-s0 > p1-t0-r1": 2})
    result = merge(Scenario(), "x", [ProcessResult.from_dict(a.to_dict()), ProcessResult.from_dict(b.to_dict())])
    assert [o["socket"] for o in result.outages] == ["p0-t0-s1", "p1-t0-r1"]
    assert result.outages[0] == a.outages[0]
    assert result.lost_by_pair == {"p0-t0-s1 > p0-t0-r0": 3, "p1-t0-s0 > p1-t0-r1": 2}
    assert result.lost_around_outages == 5 == result.counts.lost
    assert result.to_dict()["outages"][1]["up_s"] is None


def test_sockets_going_away_are_named_as_the_cause_with_numbers_and_a_remedy() -> None:
    from rtbook.load.runner import bottlenecks

    errors = {"disconnect: socket closed during the run": 3, "reconnect: socket reopened and channel rejoined": 2,
              "reconnect failed: handshake: HTTP 502 Bad Gateway": 4}
    outages = [{"socket": f"p-t0-r{i}", "down_s": 3.0 + i / 10, "up_s": up, "attempts": 2, "delivered_after": 5}
               for i, up in enumerate((4.0, 6.5, None))]
    result = merge(Scenario(), "x", [_with_outages(_part(10, 7, [1000], errors), outages, {"p-t0-s0 > p-t0-r2": 7})])
    (cause,) = bottlenecks(result)
    assert cause.startswith("sockets going away: 3 socket(s) were disconnected at ~3.1 s into the run")
    assert "7 deliveries to or from them were lost" in cause
    assert "2 reconnected and rejoined after ~2.2 s" in cause  # the median of 1.0 s and 3.4 s
    assert "1 did not come back" in cause and "handshake: HTTP 502 Bad Gateway x4" in cause
    assert "load balancer" in cause and "reconnect by themselves" in cause
    # A limit refusal explains the closes itself: the limit is named instead.
    result.limits_hit = [{"limit": "max_concurrent_users", "why": "w", "remedy": "r"}]
    assert not any(b.startswith("sockets going away") for b in bottlenecks(result))
