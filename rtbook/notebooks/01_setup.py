# %% [markdown]
# # 01 · Setup: stack files, containers and health
#
# Realtime refuses to start, or answers *Tenant not found*, when its compose service and `.env` disagree.
# Realtime takes the tenant from the first label of each request's **Host** header, not from its own hostname;
# Kong sends its upstream host (the container name `realtime-dev.supabase-realtime`) as Host, so that name, the
# healthcheck URL and the seeded tenant (`SELF_HOST_TENANT_NAME`, default `realtime-dev`) must agree.
# `API_JWT_SECRET` must be the `JWT_SECRET` that signed `ANON_KEY`, `DB_ENC_KEY` must be 16 bytes, and
# `SEED_SELF_HOST` must be exactly `"true"` for Realtime to re-create the tenant row on every start. This notebook reads the files first (no network),
# then the running containers, then asks Realtime whether it is healthy.

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
run = rtbook.runbook.start("01_setup", globals())
run.params

# %% [markdown]
# ## Stack files: compose and `.env`
#
# Checks `compose.*` and `env.*`: the Realtime service, its environment after interpolation, the secrets'
# shapes and whether they are still the published defaults. **Why:** most self-hosted Realtime failures are
# a value in these two files. **When it fails:** the remedy names the file, the key and the value to set; fix it,
# then `docker compose up -d realtime`. Tenant naming problems continue in
# [02_tenant_seeding](02_tenant_seeding.ipynb).

# %%
run.checks("compose.", "env.", title="Stack files: compose and .env")

# %% [markdown]
# ## Containers
#
# Checks `docker.*` (only when a Docker engine answers, or `docker="on"`): is Realtime running and healthy,
# does its real environment match the files, can the gateway container resolve the upstream host, what do the
# recent logs say. **Why:** what runs often differs from the files (a renamed container, an override).
# **When it fails:** the remedy gives the `docker-compose.override.yml` snippet; routing problems continue in
# [03_kong_routing](03_kong_routing.ipynb).

# %%
run.checks("docker.", title="Containers")

# %% [markdown]
# ## Realtime health
#
# Checks `realtime.health`: Realtime answers its tenant health endpoint for the tenant. **Why:** a 404 there means
# the tenant row does not exist (seed did not run), a 403 means the key is not signed with `API_JWT_SECRET`.
# **When it fails:** see [02_tenant_seeding](02_tenant_seeding.ipynb) for the tenant, or the `env.*` results above
# for the keys.

# %%
run.checks("realtime.health", title="Realtime health")

# %% [markdown]
# **Gate.** Every check above has run and its result is saved with the run. This cell raises when one of them failed (or warned, with `strict`), so `papermill` and `rtbook run` exit non-zero. Read the remedies above, fix the stack, and run again. If you cannot tell which fix applies, open [05_troubleshooting](05_troubleshooting.ipynb).

# %%
run.gate()
