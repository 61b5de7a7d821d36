"""Delivery accounting: every message a load run sends is accounted for at every expected receiver.

A message is identified by its sender and a per-sender sequence number. Each receiver that was
meant to get it (every other member of the topic when the message was sent) either received it
(``delivered``) or did not (``lost``), so ``expected == delivered + lost`` holds by construction.
Duplicates and out-of-order arrivals are counted separately and never change that sum; ``late``
is the part of ``delivered`` whose latency exceeded the run's lateness bound.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

__all__ = ["DeliveryCounts", "Ledger", "Receipt"]


class Receipt(Enum):
    """How one arrival was classified."""

    DELIVERED = "delivered"
    LATE = "late"
    DUPLICATE = "duplicate"
    UNEXPECTED = "unexpected"


@dataclass(frozen=True)
class DeliveryCounts:
    """Totals for a run (or one receiver). ``expected == delivered + lost`` always."""

    sent: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    late: int = 0
    unexpected: int = 0

    def __add__(self, other: DeliveryCounts) -> DeliveryCounts:
        return DeliveryCounts(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeliveryCounts:
        return cls(**{k: int(data.get(k, 0)) for k in cls.__dataclass_fields__})


@dataclass
class _Inbox:
    """What one receiver got from one sender."""

    seen: set[int] = field(default_factory=set)
    highest: int = -1


class Ledger:
    """Sent messages, who should receive each, and what each receiver got.

    Senders announce a message with :meth:`sent` and the receivers that were members of the
    topic at that moment; receivers report arrivals with :meth:`received`. Bounded by the run:
    the number of messages is the scenario's rate × duration, which the scenario limits.
    """

    def __init__(self, late_after_us: int) -> None:
        self._late_after_us = late_after_us
        # (sender, seq) -> receivers still expected to get it; a receiver is removed on arrival.
        self._pending: dict[tuple[str, int], set[str]] = {}
        self._expected_by: dict[str, int] = defaultdict(int)
        self._inbox: dict[tuple[str, str], _Inbox] = defaultdict(_Inbox)
        self._sent = 0
        self._delivered = 0
        self._duplicated = 0
        self._out_of_order = 0
        self._late = 0
        self._unexpected = 0

    def sent(self, sender: str, seq: int, receivers: set[str] | frozenset[str]) -> None:
        """Record that ``sender`` sent message ``seq`` to be received by ``receivers``.

        ``receivers`` is exactly who is owed it: a broadcast sender is not (``self: false``), a
        presence tracker is (Realtime sends the diff to every member); the caller knows which.
        """
        key = (sender, seq)
        if key in self._pending:
            raise ValueError(f"message {sender}#{seq} was already recorded as sent")
        self._sent += 1
        expected = set(receivers)
        self._pending[key] = expected
        for r in expected:
            self._expected_by[r] += 1

    def received(self, receiver: str, sender: str, seq: int, latency_us: int) -> Receipt:
        """Classify one arrival; ``latency_us`` runs from the message's scheduled send time."""
        inbox = self._inbox[(receiver, sender)]
        if seq in inbox.seen:
            self._duplicated += 1
            return Receipt.DUPLICATE
        waiting = self._pending.get((sender, seq))
        if waiting is None or receiver not in waiting:
            # Not announced for this receiver (joined after the send, or a stray message).
            self._unexpected += 1
            return Receipt.UNEXPECTED
        waiting.discard(receiver)
        inbox.seen.add(seq)
        if seq < inbox.highest:
            self._out_of_order += 1
        else:
            inbox.highest = seq
        self._delivered += 1
        if latency_us > self._late_after_us:
            self._late += 1
            return Receipt.LATE
        return Receipt.DELIVERED

    def counts(self) -> DeliveryCounts:
        """Totals so far; anything still pending counts as lost."""
        expected = sum(self._expected_by.values())
        lost = sum(len(w) for w in self._pending.values())
        return DeliveryCounts(
            sent=self._sent,
            expected=expected,
            delivered=self._delivered,
            lost=lost,
            duplicated=self._duplicated,
            out_of_order=self._out_of_order,
            late=self._late,
            unexpected=self._unexpected,
        )

    def lost_by_receiver(self) -> dict[str, int]:
        """Per receiver, how many of its expected messages never arrived."""
        out: dict[str, int] = defaultdict(int)
        for waiting in self._pending.values():
            for r in waiting:
                out[r] += 1
        return dict(out)

    def lost_pairs(self) -> dict[tuple[str, str], int]:
        """Per (sender, receiver), how many of the sender's messages owed to the receiver never arrived."""
        out: dict[tuple[str, str], int] = defaultdict(int)
        for (sender, _seq), waiting in self._pending.items():
            for r in waiting:
                out[(sender, r)] += 1
        return dict(out)
