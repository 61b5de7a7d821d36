"""Figures of a load run (matplotlib, Agg, imported only when drawn): what 07_load_test shows and saves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rtbook.load.runner import LoadResult

__all__ = ["FIGURES", "draw", "save"]

FIGURES = ("latency_over_time", "throughput", "sockets", "losses_and_errors")
_STEPS = ("broadcast", "presence", "postgres_changes")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(result: LoadResult) -> dict[str, Any]:
    """One matplotlib figure per entry of :data:`FIGURES`."""
    plt = _pyplot()
    figs: dict[str, Any] = {}

    fig, ax = plt.subplots(figsize=(8, 3.2))
    for step in _STEPS:
        rows = result.over_time(step)
        if rows:
            t = [r[0] for r in rows]
            ax.plot(t, [r[1] for r in rows], marker="o", label=f"{step} p50")
            ax.plot(t, [r[2] for r in rows], marker="o", linestyle="--", label=f"{step} p99")
    ax.set(xlabel=f"seconds into the run ({result.interval_s} s intervals)", ylabel="ms from scheduled send",
           title="Latency percentiles over time")
    if ax.has_data():
        ax.legend(loc="upper left", fontsize=8)
    figs["latency_over_time"] = fig

    fig, ax = plt.subplots(figsize=(8, 3.2))
    seconds = list(range(len(result.sent_per_s)))
    ax.step(seconds, result.sent_per_s, where="post", label="sent (scheduled)")
    ax.step(seconds, result.expected_per_s, where="post", label="deliveries owed (sent x members)")
    ax.step(seconds, result.delivered_per_s, where="post", linestyle="--", label="delivered")
    ax.set(xlabel="second of the run", ylabel="messages per second", title="Throughput: sent, owed, delivered")
    ax.legend(loc="upper right", fontsize=8)
    figs["throughput"] = fig

    fig, ax = plt.subplots(figsize=(5, 3.2))
    labels = ["wanted", "opened", "joined"] + (["held"] if result.scenario.kind == "connect" else [])
    values = [result.scenario.sockets, result.opened, result.joined] + (
        [result.held] if result.scenario.kind == "connect" else [])
    ax.bar(labels, values, color=["#888", "#4a7", "#27a", "#a72"][: len(values)])
    ax.set(ylabel="sockets", title="Connections")
    figs["sockets"] = fig

    c = result.counts
    kinds = {"lost": c.lost, "duplicated": c.duplicated, "out of order": c.out_of_order, "late": c.late}
    for kind, n in sorted(result.errors.items()):
        kinds[kind[:48]] = n
    fig, ax = plt.subplots(figsize=(8, max(2.4, 0.35 * len(kinds))))
    ax.barh(list(kinds), list(kinds.values()), color=["#c33" if v else "#ccc" for v in kinds.values()])
    ax.invert_yaxis()
    ax.set(xlabel="count", title="Losses and errors by kind")
    figs["losses_and_errors"] = fig
    for f in figs.values():
        f.tight_layout()
    return figs


def save(result: LoadResult, folder: Path) -> list[Path]:
    """Draw and save every figure as PNG into ``folder``; the figures are closed after."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in draw(result).items():
        path = folder / f"load_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
