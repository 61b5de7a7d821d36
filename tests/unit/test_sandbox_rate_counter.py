"""The stand-in's tenant events counter behaves like Realtime's RateCounter (ticks, buckets, trigger, clear)."""

from __future__ import annotations

from rtbook.sandbox.server_channels import TickRateCounter
from rtbook.sandbox.server_version import RealtimeBehaviour


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_it_triggers_at_a_tick_once_and_clears_when_the_average_falls() -> None:
    clock, trips = Clock(), []
    counter = TickRateCounter(5.0, 2, lambda: 100.0, lambda: trips.append(clock.now), clock=clock)
    counter.add(1000)  # 1,000 events in the first 5 s tick: 200 per second
    clock.now += 4.9
    assert not counter.is_triggered()  # nothing is judged between ticks
    clock.now += 0.2
    assert counter.is_triggered() and counter.avg == 200.0
    counter.add(1000)
    clock.now += 5
    assert counter.is_triggered() and len(trips) == 1  # still over: one trip, one log line
    clock.now += 10  # two idle ticks: both kept buckets are 0 now
    assert not counter.is_triggered() and counter.avg == 0.0


def test_a_young_counter_averages_over_the_ticks_it_has_lived() -> None:
    clock = Clock()
    counter = TickRateCounter(5.0, 12, lambda: 1e9, lambda: None, clock=clock)
    counter.add(50)
    clock.now += 5
    counter.is_triggered()
    assert counter.avg == 10.0  # 50 events / 1 bucket / 5 s, not / 12 buckets
    clock.now += 15  # three more (idle) ticks
    counter.is_triggered()
    assert counter.avg == 50 / 4 / 5


def test_the_tick_follows_the_version() -> None:
    new, old = RealtimeBehaviour.of("v2.129.8"), RealtimeBehaviour.of("v2.78.19")
    assert (new.events_tick_s, new.events_buckets) == (5.0, 12)
    assert (old.events_tick_s, old.events_buckets) == (1.0, 60)
