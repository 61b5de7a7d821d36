# %% [markdown]
# # 05 · Troubleshooting: from a symptom to the fix
#
# Start from what you see, not from the checks. The runbook takes the results the run's earlier notebooks saved
# (from `run_dir`; without one, it runs the deciding checks now) and first names the root cause(s): the failing
# checks nothing else failing explains, each with one remedy. Then, for each symptom below, it walks the checks
# that decide it in order: the first failing one leads to its root cause, whose remedy is the fix, and the link
# goes to the notebook that re-checks it.
#
# | symptom | deciding checks (in order) |
# |---|---|
# | *Tenant not found* (404; an empty 403 before Realtime 2.116) (`tenant_not_found`) | `compose.realtime.tenant_consistency`, `docker.realtime.tenant_host`, `compose.realtime.seed_self_host`, `tenant.row`, `kong.realtime_preserve_host`, `envoy.realtime_host_rewrite`, `kong.realtime_ws`, `kong.realtime_rest`, `envoy.realtime_ws`, `gateway.websocket`, `gateway.rest`, `docker.realtime.logs`, `realtime.health` |
# | the socket closes at once / CHANNEL_ERROR (`socket_closes`) | `kong.realtime_ws`, `envoy.realtime_ws`, `kong.realtime_auth`, `gateway.websocket`, `gateway.key_auth`, `env.api_keys`, `compose.realtime.jwt_secret`, `tenant.jwt_secret`, `docker.realtime.running`, `realtime.join`, `realtime.private`, `realtime.bad_token` |
# | SUBSCRIBED but no changes (`no_changes`) | `db.wal_level`, `db.wal2json`, `db.publication`, `db.replica_identity`, `db.rls`, `db.realtime_slots`, `db.replication_capacity`, `tenant.extension`, `tenant.db_settings`, `realtime.postgres_changes`, `realtime.rls` |
# | high memory / OOM (`high_memory`) | `docker.realtime.running`, `docker.realtime.limits`, `tenant.limits`, `db.realtime_connections`, `db.realtime_slots` |
#
# Set the `symptom` parameter to one key (in brackets above) to see only that symptom.

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
run = rtbook.runbook.start("05_troubleshooting", globals(), need_target=False)
run.params

# %% [markdown]
# ## Root cause first
#
# Checks depend on each other (a join needs the WebSocket through the gateway, which needs the route, the Host
# naming a seeded tenant, and the tenant's secret), so one cause makes many checks fail. This block groups the
# run's failures under the cause(s) that explain them, each with **one** remedy with the stack's real values, and
# draws the path from the client to the database: the red hop is where the fix goes, orange hops only suffer
# from it. Fix the first cause, then run again.

# %%
run.root_causes()

# %% [markdown]
# ## Verdicts
#
# One row per symptom: **fail** means a deciding check failed and explains it (the remedy is the fix, the link the
# notebook to re-check); **pass** means no deciding check failed; **skip** means none of them ran yet.

# %%
run.troubleshoot()

# %% [markdown]
# **Gate.** This cell raises when a symptom above has a failing deciding check (or a warning, with `strict`), so `papermill` and `rtbook run` exit non-zero. Apply the verdict's remedy, then re-run the notebook it links.

# %%
run.gate()
