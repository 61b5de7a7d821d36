# %% [markdown]
# # 07 · Load test: how much this stack holds, and what each user sees
#
# Puts measured load on the target with `rtbook load`: messages are sent at their scheduled times whatever the
# server answers, latency runs from that scheduled time (no coordinated omission) into HDR histograms, and every
# socket owed a message accounts for it (`expected = delivered + lost`). The run names the limit it hit (a tenant
# setting such as `max_events_per_second`, the load generator's own CPU, the proxy, or the server). Kept short by
# default (`load_duration_s`); a target that is not this machine or the sandbox needs `load_own_target`.

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
# **Target.** The next cell checks every parameter above against the runbook's one schema and builds the target.
# Secrets (the anon key, the database password for `postgres_changes`) come from the environment or the stack's
# `.env`, never from parameters.

# %%
import rtbook.runbook
run = rtbook.runbook.start("07_load_test", globals())
run.params

# %% [markdown]
# ## The load run
#
# Runs the `load_scenario` for `load_duration_s` at `load_rate`, with `load_sockets` receivers (or sockets held),
# and judges `load_thresholds`. Shows the counts, the exact percentiles, which side limited the run, and four
# figures: latency percentiles over time, messages sent / owed / delivered per second, sockets, and losses and
# errors by kind. With `rtbook run`, the figures, `load.json` and the raw histograms (`latency.hlog`, the
# HdrHistogram log format) are saved in the record's `07_load/` folder. **When it fails:** a named tenant limit is
# changed with `rtbook tenant plan --limit NAME=VALUE` (see [02_tenant_seeding](02_tenant_seeding.ipynb)); a
# generator at its CPU limit needs `rtbook load --processes` or Locust workers, not a server fix.

# %%
run.load()

# %% [markdown]
# **Gate.** Raises when a threshold was violated (or, with `strict`, when messages were lost or refused), so
# `papermill` and `rtbook run` exit non-zero.

# %%
run.gate()
