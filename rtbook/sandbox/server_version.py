"""Which Realtime the stand-in imitates: behaviour switches at the real version boundaries.

Every boundary below is the first ``supabase/realtime`` tag that contains the change
(``git tag --contains <commit> | sort -V | head -1``); the notes in /work/notes/realtime.md and
docs/conformance.md cite the files. Versions newer than the newest tag read (v2.129.8) behave like it.

Timers that Realtime reads from the environment keep Realtime's names (``CONNECT_ERROR_BACKOFF_MS``,
``CHANNEL_ERROR_BACKOFF_MS``, ``REGION``, ``LOG_LEVEL``, ``SLOT_NAME_SUFFIX``); timers that are module
attributes in Realtime (no variable exists) can be shortened for tests with ``RTBOOK_*`` variables and
default to Realtime's values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from rtbook.exceptions import ConfigError

__all__ = [
    "NEWEST_READ",
    "RealtimeBehaviour",
    "Timers",
    "parse_version",
    "tenant_migrations_count",
]

NEWEST_READ = "2.129.8"
Version = tuple[int, int, int]


def parse_version(text: str) -> Version:
    """``"v2.78.19"`` / ``"2.78.19"`` → ``(2, 78, 19)``.

    Raises:
        ConfigError: the text is not a version.
    """
    parts = text.strip().lstrip("v").split("-", 1)[0].split(".")
    try:
        major, minor, patch = (int(p) for p in [*parts, "0", "0"][:3])
    except ValueError as exc:
        raise ConfigError(
            f"realtime version {text!r} is not a version like 2.78.19 (the image tag, with or without the v)"
        ) from exc
    return major, minor, patch


# Length of Realtime.Tenants.Migrations' @migrations list (lib/realtime/tenants/migrations.ex) from each tag on;
# `migrations_ran` in _realtime.tenants is compared with it (OLD 68, NEW 81).
_TENANT_MIGRATIONS: tuple[tuple[Version, int], ...] = (
    ((2, 25, 2), 29), ((2, 25, 25), 30), ((2, 25, 55), 33), ((2, 25, 56), 35), ((2, 25, 70), 36),
    ((2, 26, 7), 37), ((2, 27, 0), 38), ((2, 27, 7), 39), ((2, 28, 28), 40), ((2, 29, 3), 41), ((2, 29, 9), 42),
    ((2, 30, 17), 43), ((2, 30, 20), 44), ((2, 32, 3), 45), ((2, 33, 0), 47), ((2, 33, 7), 48), ((2, 33, 19), 49),
    ((2, 33, 28), 50), ((2, 33, 53), 51), ((2, 33, 61), 52), ((2, 33, 71), 53), ((2, 33, 72), 54),
    ((2, 33, 73), 55), ((2, 33, 78), 56), ((2, 33, 80), 57), ((2, 34, 7), 58), ((2, 34, 12), 59),
    ((2, 34, 18), 60), ((2, 35, 0), 61), ((2, 35, 6), 62), ((2, 40, 8), 63), ((2, 49, 0), 64), ((2, 61, 0), 65),
    ((2, 74, 0), 67), ((2, 76, 6), 68), ((2, 82, 0), 69), ((2, 98, 0), 70), ((2, 101, 0), 71), ((2, 102, 0), 72),
    ((2, 103, 2), 73), ((2, 104, 2), 74), ((2, 105, 0), 76), ((2, 110, 0), 77), ((2, 111, 6), 78),
    ((2, 112, 0), 79), ((2, 112, 5), 80), ((2, 112, 10), 81),
)


def tenant_migrations_count(version: Version) -> int:
    """How many tenant migrations an image of ``version`` knows (0 before v2.25.2)."""
    count = 0
    for tag, n in _TENANT_MIGRATIONS:
        if version >= tag:
            count = n
    return count


@dataclass(frozen=True)
class RealtimeBehaviour:
    """The behaviour switches of one Realtime image version."""

    version: Version

    @classmethod
    def of(cls, text: str) -> RealtimeBehaviour:
        """The behaviour of the image tag ``text``."""
        return cls(parse_version(text))

    @property
    def text(self) -> str:
        """``2.78.19``."""
        return ".".join(str(p) for p in self.version)

    def since(self, tag: Version) -> bool:
        """True when this version contains a change first tagged ``tag``."""
        return self.version >= tag

    # -- handshake (lib/realtime_web/channels/user_socket.ex) ---------------------------------

    @property
    def handshake_json_errors(self) -> bool:
        """``handle_error/2`` answers 401/403/404/429/500 with ``{"error": …}`` (d27b694c, v2.116.0); before, 403
        with an empty body."""
        return self.since((2, 116, 0))

    @property
    def missing_apikey_code(self) -> bool:
        """A missing apikey is logged ``MissingAPIKey`` (69ef415c, v2.86.3); before, as ``TenantNotFound``."""
        return self.since((2, 86, 3))

    @property
    def connect_error_backoff_default_ms(self) -> int | None:
        """``CONNECT_ERROR_BACKOFF_MS`` (83da1ae9, v2.81.0): 2000; None = the version has no such delay."""
        return 2000 if self.since((2, 81, 0)) else None

    # -- rate counters (lib/realtime/rate_counter/rate_counter.ex, lib/realtime/tenants.ex) -------

    @property
    def events_tick_s(self) -> float:
        """The tenant events counter's tick: 5 s since 87d663dd (v2.80.12, "tick most RateCounters every 5
        seconds"), 1 s before."""
        return 5.0 if self.since((2, 80, 12)) else 1.0

    @property
    def events_buckets(self) -> int:
        """Buckets the events average is taken over: 12 (of 5 s) since v2.80.12, 60 (of 1 s) before."""
        return 12 if self.since((2, 80, 12)) else 60

    # -- joins (lib/realtime_web/channels/realtime_channel.ex) ---------------------------------

    @property
    def channel_error_backoff_default_ms(self) -> int | None:
        """``CHANNEL_ERROR_BACKOFF_MS`` (d8e0d6fc, v2.83.0): 5000; None = no such delay."""
        return 5000 if self.since((2, 83, 0)) else None

    @property
    def join_rescues_exceptions(self) -> bool:
        """``join/3`` has a ``rescue`` that answers ``UnknownErrorOnChannel: …`` (v2.83.0); before, Phoenix's
        ``join crashed``."""
        return self.since((2, 83, 0))

    @property
    def join_handles_missing_tenant(self) -> bool:
        """``Cache.fetch_tenant_by_external_id`` → ``TenantNotFound`` + disconnect (e1200441, v2.92.1); before, a nil
        tenant matched no ``with`` clause (WithClauseError)."""
        return self.since((2, 92, 1))

    @property
    def private_flexible_boolean(self) -> bool:
        """``config.private`` goes through FlexibleBoolean (``Join.private?``, 750d6d2f, v2.111.1); before,
        ``!!params["config"]["private"]`` (any non-false value, even ``"false"``, is private)."""
        return self.since((2, 111, 1))

    @property
    def channel_limit_logged_when_reached(self) -> bool:
        """``ChannelRateLimitReached`` is logged by the join that reaches the limit (4bc7a38b, v2.80.7); before, on
        each refusal."""
        return self.since((2, 80, 7))

    @property
    def user_broadcast_binary(self) -> bool:
        """The V2 serializer with binary kinds 3/4 (6a220e79, v2.63.0)."""
        return self.since((2, 63, 0))

    # -- health and Connect (lib/realtime/tenants.ex, lib/realtime/tenants/connect.ex) ---------

    @property
    def health_async_migrations(self) -> bool:
        """Health with no DB connection and no users: ``not run_migrations?`` and migrations started async (25de372d,
        v2.106.0); before, migrations run inside the request."""
        return self.since((2, 106, 0))

    @property
    def connect_idle_default(self) -> tuple[int, int]:
        """Connect samples users every N ms and stops after K zero samples: (60 000, 11) since 11b17753 (v2.98.2);
        before (50 000, 6)."""
        return (60_000, 11) if self.since((2, 98, 2)) else (50_000, 6)

    @property
    def connect_db_recovery(self) -> bool:
        """A lost DB pool opens a 10 min recovery window, then Connect stops (v2.123.5); before, Connect kept its
        pool until the idle shutdown."""
        return self.since((2, 123, 5))

    @property
    def tenant_migrations(self) -> int:
        """The count ``_realtime.tenants.migrations_ran`` must reach."""
        return tenant_migrations_count(self.version)

    @property
    def messages_binary_payload(self) -> bool:
        """``realtime.messages.binary_payload`` (migration 20260514120000, v2.98.0)."""
        return self.since((2, 98, 0))

    # -- postgres_changes (lib/extensions/postgres_cdc_rls/) ------------------------------------

    @property
    def poller_publication_lifecycle(self) -> bool:
        """The slot exists only while the publication has tables, re-checked every 60 s (59199ff9, v2.107.1)."""
        return self.since((2, 107, 1))

    @property
    def poller_lifecycle_logs(self) -> bool:
        """Info ``ReplicationPoller's publication went from … tables`` (5bfbef75, v2.107.2)."""
        return self.since((2, 107, 2))

    @property
    def poller_max_retries(self) -> int | None:
        """``@max_retries 6`` then ``ReplicationPollerMaxRetriesReached`` (59f7b228, v2.102.2); None = forever."""
        return 6 if self.since((2, 102, 2)) else None

    @property
    def poll_idle_multiplier(self) -> int:
        """An idle poll waits ``poll_interval_ms × 5`` (v2.82.0); before, ``poll_interval_ms``."""
        return 5 if self.since((2, 82, 0)) else 1

    @property
    def cdc_params_select(self) -> bool:
        """Subscription params carry ``select:`` (c9b1f12f, v2.101.0)."""
        return self.since((2, 101, 0))

    @property
    def cdc_filters_negate(self) -> bool:
        """Filters are 4-tuples ``{"col", "eq", "1", false}`` (c489088f, v2.112.0); before, 3-tuples."""
        return self.since((2, 112, 0))


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer number of milliseconds, got {raw!r}") from exc
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {value}")
    return value


@dataclass(frozen=True)
class Timers:
    """Delays and intervals, in milliseconds, resolved for one version and environment."""

    connect_error_backoff_ms: int
    channel_error_backoff_ms: int
    cdc_poller_check_oids_interval_ms: int
    cdc_manager_check_oids_interval_ms: int
    cdc_check_no_users_interval_ms: int
    cdc_stop_after_ms: int
    connect_check_users_interval_ms: int
    connect_zero_samples: int
    db_recovery_ms: int

    @classmethod
    def resolve(
        cls,
        behaviour: RealtimeBehaviour,
        env: Mapping[str, str] | None = None,
        *,
        connect_error_backoff_ms: int | None = None,
        channel_error_backoff_ms: int | None = None,
    ) -> Timers:
        """Realtime's values for ``behaviour``, overridden by the environment, then by explicit values.

        A version without a backoff has none, whatever the environment says (it would not read the variable).
        """
        environ = os.environ if env is None else env

        def backoff(default: int | None, name: str, explicit: int | None) -> int:
            if default is None:
                return 0
            if explicit is not None:
                return explicit
            from_env = _env_int(environ, name)
            return default if from_env is None else from_env

        def knob(name: str, default: int) -> int:
            value = _env_int(environ, name)
            return default if value is None else value

        interval, samples = behaviour.connect_idle_default
        oids = knob("RTBOOK_CDC_CHECK_OIDS_INTERVAL_MS", 60_000)
        return cls(
            connect_error_backoff_ms=backoff(
                behaviour.connect_error_backoff_default_ms, "CONNECT_ERROR_BACKOFF_MS", connect_error_backoff_ms),
            channel_error_backoff_ms=backoff(
                behaviour.channel_error_backoff_default_ms, "CHANNEL_ERROR_BACKOFF_MS", channel_error_backoff_ms),
            # ReplicationPoller and SubscriptionManager each have @check_oids_interval 60_000 (independent timers):
            # RTBOOK_CDC_CHECK_OIDS_INTERVAL_MS sets both, the POLLER_/MANAGER_ variants one of them.
            cdc_poller_check_oids_interval_ms=knob("RTBOOK_CDC_POLLER_CHECK_OIDS_INTERVAL_MS", oids),
            cdc_manager_check_oids_interval_ms=knob("RTBOOK_CDC_MANAGER_CHECK_OIDS_INTERVAL_MS", oids),
            # SubscriptionManager @check_no_users_interval 60_000 and @stop_after 60_000 * 10
            cdc_check_no_users_interval_ms=knob("RTBOOK_CDC_CHECK_NO_USERS_INTERVAL_MS", 60_000),
            cdc_stop_after_ms=knob("RTBOOK_CDC_STOP_AFTER_MS", 600_000),
            # Connect @check_connected_user_interval_default and @connected_users_bucket_shutdown
            connect_check_users_interval_ms=knob("RTBOOK_CONNECT_CHECK_USERS_INTERVAL_MS", interval),
            connect_zero_samples=samples,
            # Connect @max_db_recovery_ms :timer.minutes(10)
            db_recovery_ms=knob("RTBOOK_DB_RECOVERY_MS", 600_000),
        )
