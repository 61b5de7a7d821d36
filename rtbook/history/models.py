"""The history tables: one row per run, one per verdict, one per measured latency.

Plain SQLAlchemy Core-compatible ORM tables, so any database SQLAlchemy speaks can hold the
index (SQLite by default). Times are ISO-8601 UTC text: they sort the same on every backend.
"""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Base", "MetricRow", "RunRow", "VerdictRow"]


class Base(DeclarativeBase):
    """The declarative base of the history tables (their own metadata, created on first use)."""


class RunRow(Base):
    """One run: a ``rtbook run`` record folder or a ``rtbook check --output`` report file."""

    __tablename__ = "rtbook_runs"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    target: Mapped[str] = mapped_column(String(1000), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # run | check
    started: Mapped[str] = mapped_column(String(40), index=True)
    record: Mapped[str] = mapped_column(Text)
    exit_code: Mapped[int] = mapped_column(Integer)
    passed: Mapped[int] = mapped_column(Integer, default=0)
    warned: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    errored: Mapped[int] = mapped_column(Integer, default=0)
    verdicts: Mapped[list[VerdictRow]] = relationship(back_populates="run", cascade="all, delete-orphan")
    metrics: Mapped[list[MetricRow]] = relationship(back_populates="run", cascade="all, delete-orphan")


class VerdictRow(Base):
    """The status of one check in one run (the last result per check id)."""

    __tablename__ = "rtbook_verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("rtbook_runs.id", ondelete="CASCADE"), index=True)
    check_id: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    run: Mapped[RunRow] = relationship(back_populates="verdicts")


class MetricRow(Base):
    """One figure a check measured (``connect_ms``, ``elapsed_ms``...), in milliseconds."""

    __tablename__ = "rtbook_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("rtbook_runs.id", ondelete="CASCADE"), index=True)
    check_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    run: Mapped[RunRow] = relationship(back_populates="metrics")
