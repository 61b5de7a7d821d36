# %% [markdown]
# # 04 · Subscription tests: what a client really gets
#
# A real Phoenix channel client joins through the gateway the way `supabase-js` does, and measures each feature:
# the join, a refused bad token, broadcast round trips, presence, postgres_changes for each table, and RLS per
# role (a row the role may not read must not arrive). Latencies are recorded as metrics and charted at the end.
# (The heartbeat is answered in `gateway.websocket`, in [03_kong_routing](03_kong_routing.ipynb).)

# %% tags=["parameters"]
# Parameters. Values saved by the form in 00_start_here (outputs/params.json beside this notebook) are used
# when that file exists, for every name left at its default below; a value changed here, papermill's and
# 'rtbook run -p name=value' override them (rtbook run reads only --params-file). Never put a secret here.
target_kind: str = 'sandbox'  # sandbox: the running embedded sandbox; stack: the stack in stack_dir and the URLs below
stack_dir: str = ''  # directory laid out like supabase/docker (docker-compose.yml, .env, volumes/api/kong.yml)
api_url: str = ''  # public gateway (Kong) URL, e.g. http://localhost:8000; empty skips live gateway checks
realtime_url: str = ''  # Realtime reached directly, e.g. http://127.0.0.1:4000 (optional)
realtime_host: str = ''  # Host header for direct Realtime requests; its first label is the tenant
db_url: str = ''  # database URL WITHOUT password, e.g. postgresql://supabase_admin@localhost:5432/postgres
tenant: str = ''  # tenant id; empty means what the stack implies (realtime-dev for the official stack)
tables: list = []  # schema.table names for the postgres_changes tests; empty means the whole publication
docker: str = 'auto'  # auto: container checks when an engine answers; on: require them; off: skip them
timeout_s: float = 10.0  # seconds allowed for each network operation
apply_fixes: bool = False  # 02 applies the tenant seeding plan (writes to the database)
confirm_apply: bool = False  # second switch that headless runs need before apply_fixes writes anything
strict: bool = False  # the gate cell also fails on warnings
symptom: str = ''  # 05 only: the symptom to explain; empty means every known symptom
run_dir: str = ''  # folder where each notebook saves its results (set by rtbook run); 05 reads it
load_scenario: str = 'broadcast'  # 07 only: connect, broadcast, presence or postgres_changes (probe table)
load_rate: float = 20.0  # 07 only: messages per second in all (connect: joins per second)
load_duration_s: float = 3.0  # 07 only: seconds of sending (connect: of holding the sockets)
load_sockets: float = 4.0  # 07 only: receivers per topic (connect: sockets to hold)
load_thresholds: list = ["lost<1"]  # 07 only: e.g. broadcast.p99<50ms or lost<1; a violated one fails the gate
load_own_target: bool = False  # 07 only: allow loading a target that is not 127.0.0.1 or the sandbox

# %% [markdown]
# **Target.** Values saved by the form in [00_start_here](00_start_here.ipynb) (`outputs/params.json` beside this notebook) are used for every parameter left at its default above; the next cell says which it used. It then checks every parameter against the runbook's one schema (an unknown or mistyped name, or anything that looks like a secret, stops here with the fix) and builds the target: the stack's files plus the URLs the live checks talk to. Secrets are read from the environment or the stack's `.env`, never from parameters.

# %%
import rtbook.runbook
run = rtbook.runbook.start("04_subscription_tests", globals())
run.params

# %% [markdown]
# ## Connection: join and a bad token
#
# Checks `realtime.join` and `realtime.bad_token`. **When it fails:** a refused join is
# usually the tenant or the key, see [03_kong_routing](03_kong_routing.ipynb) and
# [02_tenant_seeding](02_tenant_seeding.ipynb); a socket that closes at once is explained in
# [05_troubleshooting](05_troubleshooting.ipynb).

# %%
run.checks("realtime.join", "realtime.bad_token", title="Connection")

# %% [markdown]
# ## Broadcast and presence
#
# Checks `realtime.broadcast` and `realtime.presence`: a message sent is received (with `self` and `ack`), a
# presence track shows up in the state. **When it fails:** compare with the gateway probes in
# [03_kong_routing](03_kong_routing.ipynb).

# %%
run.checks("realtime.broadcast", "realtime.presence", title="Broadcast and presence")

# %% [markdown]
# ## Postgres changes and RLS
#
# Checks `realtime.postgres_changes` and `realtime.rls`: an insert, update and delete arrive for each table, and
# a row the subscriber's role may not read does not. **When it fails:** the database prerequisites are in
# [02_tenant_seeding](02_tenant_seeding.ipynb); *subscribed but no changes* is walked through in
# [05_troubleshooting](05_troubleshooting.ipynb).

# %%
run.checks("realtime.postgres_changes", "realtime.rls", title="Postgres changes and RLS")

# %% [markdown]
# ## Every other subscription check
#
# Any other `realtime.*` check this installation has and the steps above did not run, except
# `realtime.cluster`, which [06_scale_out](06_scale_out.ipynb) runs with the load-balancer checks.

# %%
run.checks("realtime.", title="Other subscription checks", skip_done=True, exclude=("realtime.cluster",))

# %% [markdown]
# ## Latency
#
# How long each step took, as a client sees it: connect, join, a broadcast reaching a second client, a presence
# track seen by another client, and an INSERT arriving as a postgres_changes event. A bar marked *not measured*
# belongs to a check that did not pass (its row above says why).

# %%
run.latency_chart()

# %% [markdown]
# **Gate.** Every check above has run and its result is saved with the run. This cell raises when one of them failed (or warned, with `strict`), so `papermill` and `rtbook run` exit non-zero. Read the remedies above, fix the stack, and run again. If you cannot tell which fix applies, open [05_troubleshooting](05_troubleshooting.ipynb).

# %%
run.gate()
