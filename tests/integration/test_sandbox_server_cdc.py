"""postgres_changes lifecycle of the stand-in, per Realtime version (notes §4; lib/extensions/postgres_cdc_rls/).

* v2.107.1+: the poller holds a slot only while the publication has tables, re-checked every 60 s;
* the subscription manager re-reads the publication every 60 s and, on a change, drops every subscription and
  resubscribes each channel (one more "Subscribed to PostgreSQL" per subscription row);
* the CDC workers linger 10 min after the last subscriber;
* v2.102.2+: the poller gives up after 6 failures (``ReplicationPollerMaxRetriesReached``); older versions retry
  forever and create the slot even for an empty publication.

Each test uses a tenant of its own (its own publication and slot name) so they do not disturb each other; the
60 s / 10 min timers are shortened through the ``RTBOOK_*`` variables except in the test of the defaults.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rtbook.sandbox import PostgresCluster, seed_tenant
from rtbook.sandbox.server_process import start_server
from tests.integration.sandbox_support import cluster_and_server
from tests.integration.test_sandbox_server import API_SECRET, JWT_SECRET, Phoenix, Stack, token

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

SHORT = {"CONNECT_ERROR_BACKOFF_MS": "0", "CHANNEL_ERROR_BACKOFF_MS": "0", "RTBOOK_CDC_CHECK_OIDS_INTERVAL_MS": "700"}
# The linger shortened too, where the test is about it: longer than a channel's 1-3 s subscribe retry, or a cold
# tenant would stop before its first subscriber registers.
LINGER = {**SHORT, "RTBOOK_CDC_CHECK_NO_USERS_INTERVAL_MS": "300", "RTBOOK_CDC_STOP_AFTER_MS": "6000"}
SETUP = tuple(f"create table public.{t} (id bigint primary key, body text)" for t in ("t1", "t2", "t3"))


def _config(cluster: PostgresCluster, **extra: Any) -> dict[str, Any]:
    return {
        "db": f"host=127.0.0.1 port={cluster.port} user=supabase_admin dbname=postgres",
        "db_enc_key": "supabaserealtime",
        "api_jwt_secret": API_SECRET,
        "metrics_jwt_secret": API_SECRET,
        **extra,
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with cluster_and_server(JWT_SECRET, _config, setup_sql=SETUP, env=SHORT,
                            kept_out_of_the_log=(JWT_SECRET, API_SECRET)) as (cluster, server):
        yield Stack(cluster, server)


@contextlib.contextmanager
def other_server(cluster: PostgresCluster, version: str, env: dict[str, str]) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="rtbook-srv-cdc-"))
    srv = None
    try:
        srv = start_server(_config(cluster, realtime_version=version), workdir=workdir, db_password=cluster.password,
                           extra_env=env)
        yield Stack(cluster, srv)
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def tenant(stack: Stack, name: str, tables: tuple[str, ...] = ()) -> str:
    """A tenant ``name`` whose publication ``pub_<name>`` holds ``tables`` and whose slot is ``<name>_slot_``."""
    with stack.cluster.connect() as conn:
        conn.execute(f"drop publication if exists pub_{name}")
        conn.execute(f"create publication pub_{name}" + (f" for table {', '.join(tables)}" if tables else ""))
    seed_tenant(stack.cluster, tenant=name, jwt_secret=JWT_SECRET, db_host="127.0.0.1", db_port=stack.cluster.port,
                db_password=stack.cluster.password, migrations_ran=81,
                extension_settings={"publication": f"pub_{name}", "slot_name": f"{name}_slot"})
    return f"{name}.supabase-realtime"


def slot_exists(stack: Stack, name: str) -> bool:
    with stack.cluster.connect() as conn:
        row = conn.execute("select count(*) from pg_replication_slots where slot_name = %s", (f"{name}_slot_",))
        return row.fetchone() == (1,)


def eventually(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")



def subscribe(ph: Phoenix, topic: str, bindings: list[dict[str, Any]]) -> dict[str, Any]:
    reply = ph.join(topic, {"postgres_changes": bindings})
    assert reply["status"] == "ok", reply
    return ph.event("system", timeout=10)["payload"]


def is_subscribed(msg: dict[str, Any]) -> bool:
    return msg["status"] == "ok" and msg["message"] == "Subscribed to PostgreSQL"


T1 = [{"event": "*", "schema": "public", "table": "t1"}]


def test_publication_change_resubscribes_every_channel(stack: Stack) -> None:
    host = tenant(stack, "rs", ("public.t1",))
    one = stack.ws(apikey=token("service_role"), host=host)
    wild = stack.ws(apikey=token("service_role"), host=host)
    two = stack.ws(apikey=token("service_role"), host=host)
    assert is_subscribed(subscribe(one, "realtime:one", T1))
    assert is_subscribed(subscribe(wild, "realtime:wild", [{"event": "*", "schema": "public", "table": "*"}]))
    assert is_subscribed(subscribe(two, "realtime:two", [{"event": "INSERT", "schema": "public", "table": "t1"},
                                                         {"event": "DELETE", "schema": "public", "table": "t1"}]))
    stack.cluster.execute("alter publication pub_rs add table public.t2")
    # every channel is subscribed again: a second system message, and one per subscription row
    assert is_subscribed(one.event("system", timeout=5)["payload"])
    assert is_subscribed(wild.event("system", timeout=5)["payload"])
    assert is_subscribed(two.event("system", timeout=5)["payload"])
    assert is_subscribed(two.event("system", timeout=5)["payload"])
    one.nothing("system", 0.5)
    assert re.search(r"project=rs external_id=rs \[warning\] Found new oids %\{", stack.server.log_text())
    # the wildcard subscription covers the new table now; the one for t1 does not
    stack.cluster.execute("insert into public.t2 values (1, 'new table')")
    got = wild.event("postgres_changes", timeout=5)["payload"]["data"]
    assert (got["table"], got["record"]) == ("t2", {"id": 1, "body": "new table"})
    one.nothing("postgres_changes", 1.0)
    for ph in (one, wild, two):
        ph.close()


def test_slot_only_while_the_publication_has_tables(stack: Stack) -> None:
    host = tenant(stack, "lc")
    ph = stack.ws(apikey=token("service_role"), host=host)
    # not in the (empty) publication: the 0-rows error, no retry; the workers start but make no slot
    failed = subscribe(ph, "realtime:lc", T1)
    assert failed["status"] == "error" and failed["message"].startswith(
        "Unable to subscribe to changes with given parameters. Please check Realtime is enabled")
    time.sleep(1.0)
    assert not slot_exists(stack, "lc")
    stack.cluster.execute("alter publication pub_lc add table public.t1")
    eventually(lambda: slot_exists(stack, "lc"), 5, "the slot after tables appeared")
    assert re.search(r"project=lc external_id=lc \[info\] ReplicationPoller's publication went from 0 to 1 tables, "
                     r"starting replication$", stack.server.log_text(), flags=re.MULTILINE)
    # a channel whose first subscribe failed is not resubscribed: it has to rejoin
    ph.nothing("system", 1.5)
    ph.close()
    ph = stack.ws(apikey=token("service_role"), host=host)
    assert is_subscribed(subscribe(ph, "realtime:lc", T1))
    stack.cluster.execute("insert into public.t1 values (10, 'seen')")
    assert ph.event("postgres_changes", timeout=5)["payload"]["data"]["record"] == {"id": 10, "body": "seen"}
    stack.cluster.execute("alter publication pub_lc drop table public.t1")
    eventually(lambda: not slot_exists(stack, "lc"), 5, "the slot dropped after the publication emptied")
    assert "ReplicationPoller's publication went from 1 to 0 tables, stopping replication" in stack.server.log_text()
    # the manager resubscribed the channel; its table left the publication: the 0-rows error
    msg = ph.event("system", timeout=5)["payload"]
    assert msg["status"] == "error" and "Please check Realtime is enabled" in msg["message"]
    ph.close()


def test_workers_linger_after_the_last_subscriber(stack: Stack) -> None:
    host = tenant(stack, "lg", ("public.t3",))
    with other_server(stack.cluster, "2.129.8", LINGER) as srv:
        ph = srv.ws(apikey=token("service_role"), host=host)
        assert is_subscribed(subscribe(ph, "realtime:lg", [{"event": "*", "schema": "public", "table": "t3"}]))
        assert slot_exists(stack, "lg")
        ph.close()
        time.sleep(2.5)
        assert slot_exists(stack, "lg"), f"the slot went with the last subscriber:\n{srv.server.log_text()[-3000:]}"
        eventually(lambda: not slot_exists(stack, "lg"), 10, "the workers stopping after RTBOOK_CDC_STOP_AFTER_MS")
        assert re.search(r"project=lg external_id=lg \[info\] Stop tenant lg because of no connected users$",
                         srv.server.log_text(), flags=re.MULTILINE)


def test_default_lifecycle_timers(stack: Stack) -> None:
    """Without the RTBOOK_* variables the 60 s / 10 min timers apply: nothing moves within a few seconds."""
    host = tenant(stack, "df", ("public.t3",))
    with other_server(stack.cluster, "2.129.8", {"CONNECT_ERROR_BACKOFF_MS": "0", "CHANNEL_ERROR_BACKOFF_MS": "0"}) \
            as srv:
        ph = srv.ws(apikey=token("service_role"), host=host)
        assert is_subscribed(subscribe(ph, "realtime:df", [{"event": "*", "schema": "public", "table": "t3"}]))
        stack.cluster.execute("alter publication pub_df add table public.t2")
        ph.nothing("system", 3.0)  # no resubscribe within 3 s (the shortened module server does it in < 1.5 s)
        ph.close()
        time.sleep(3.0)
        assert slot_exists(stack, "df")  # still lingering (10 min)
        assert "because of no connected users" not in srv.server.log_text()


def test_old_version_slot_for_an_empty_publication_and_no_recheck(stack: Stack) -> None:
    host = tenant(stack, "od")
    with other_server(stack.cluster, "2.78.19", SHORT) as old:
        ph = old.ws(apikey=token("service_role"), host=host)
        failed = subscribe(ph, "realtime:od", T1)
        # v2.78.19: 3-tuple filters and no `select:` in the text
        assert failed["message"].endswith("connect parameters: [event: *, schema: public, table: t1, filters: []]")
        eventually(lambda: slot_exists(stack, "od"), 5, "OLD creates the slot for an empty publication")
        stack.cluster.execute("alter publication pub_od add table public.t1")
        time.sleep(1.5)
        assert "ReplicationPoller's publication went" not in old.server.log_text()
        ph.close()


def test_poller_gives_up_after_six_failures_new_retries_forever_old() -> None:
    """wal_level=replica: the slot cannot be made. v2.102.2+ stops after 6 retries, v2.78.19 retries on."""
    with cluster_and_server(JWT_SECRET, _config, wal_level="replica", env=SHORT,
                            kept_out_of_the_log=(JWT_SECRET,)) as (cluster, server):
        new = Stack(cluster, server)
        with other_server(cluster, "2.78.19", SHORT) as old:
            phs = []
            for st in (new, old):
                ph = st.ws(apikey=token("service_role"))
                # the subscription itself works: "Subscribed" although no slot can exist
                assert is_subscribed(subscribe(ph, "realtime:todos", [{"event": "*", "schema": "public",
                                                                       "table": "todos"}]))
                phs.append(ph)
            eventually(lambda: "ReplicationPollerMaxRetriesReached" in new.server.log_text(), 40,
                       "ReplicationPollerMaxRetriesReached")
            text = new.server.log_text()
            assert re.search(r"project=realtime-dev external_id=realtime-dev error_code=PoolingReplicationPreparation"
                             r"Error \[error\] PoolingReplicationPreparationError: %Postgrex.Error\{\n  message: nil,\n"
                             r"  postgres: %\{\n    code: :object_not_in_prerequisite_state,", text)
            assert 'message: "logical decoding requires wal_level >= logical"' in text
            # the first try and 6 retries, then the give-up
            before = text[: text.index("ReplicationPollerMaxRetriesReached")]
            assert before.count("[error] PoolingReplicationPreparationError:") == 7
            # the broadcast-from-database replication connection cannot start either
            assert re.search(r"error_code=StartReplicationFailed \[error\] StartReplicationFailed: Error starting "
                             r"replication: logical decoding requires wal_level >= logical$", text, flags=re.MULTILINE)
            eventually(lambda: old.server.log_text().count("[error] PoolingReplicationPreparationError:") >= 9, 40,
                       "the old poller retrying past 6")
            assert "ReplicationPollerMaxRetriesReached" not in old.server.log_text()
            for ph in phs:
                ph.close()


@pytest.mark.parametrize("version", ["2.129.8", "2.78.19"])
def test_both_unable_to_subscribe_variants_get_their_own_cause(stack: Stack, version: str) -> None:
    """Not in the publication vs the subscription insert raising (a filter on a column that does not exist).

    Both system messages start with "Unable to subscribe to changes with given parameters"; the stand-in sends
    each as the Realtime image of ``version`` does, and rtbook's diagnosis gives each its own cause and a remedy
    with the real table (and column) filled in.
    """
    from rtbook.remedies import diagnose

    name = "uv" + version.split(".")[1]
    host = tenant(stack, name, ("public.t1",))
    with other_server(stack.cluster, version, SHORT) as server:
        ph = server.ws(apikey=token("service_role"), host=host)
        unpublished = subscribe(ph, "realtime:unpublished", [{"event": "*", "schema": "public", "table": "t3"}])
        bad_filter = subscribe(ph, "realtime:badfilter",
                               [{"event": "*", "schema": "public", "table": "t1", "filter": "nosuchcol=eq.1"}])
        ph.close()
    assert unpublished["status"] == "error" and bad_filter["status"] == "error"
    assert unpublished["message"].startswith("Unable to subscribe to changes with given parameters. Please check")
    assert bad_filter["message"].startswith("Unable to subscribe to changes with given parameters. An exception")
    assert "invalid column for filter nosuchcol" in bad_filter["message"]
    publication = diagnose(message=unpublished["message"])
    column = diagnose(message=bad_filter["message"])
    assert publication is not None and column is not None
    assert (publication.id, column.id) == ("not_in_publication", "subscription_filter_column")
    assert "ALTER PUBLICATION supabase_realtime ADD TABLE public.t3" in publication.remedy
    assert "column_name = 'nosuchcol'" in column.remedy and "public.t1" in column.remedy
