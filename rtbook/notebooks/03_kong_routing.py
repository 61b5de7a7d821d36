# %% [markdown]
# # 03 · Gateway routing: Kong (or Envoy) to Realtime
#
# Clients reach Realtime through the gateway: `/realtime/v1/websocket` must be proxied as a WebSocket upgrade
# with key authentication, `/realtime/v1/api` to Realtime's REST API, and Realtime's admin API
# (`/realtime/v1/api/tenants`) must be blocked. Realtime reads the tenant from the first label of the request's
# Host header; Kong does not preserve the client's Host but sends the upstream host (Envoy must rewrite Host to
# it), so the upstream host's first label must be the tenant id.

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
run = rtbook.runbook.start("03_kong_routing", globals())
run.params

# %% [markdown]
# ## Gateway configuration
#
# Checks `kong.*` and `envoy.*` on the declarative files: routes, plugins, placeholders, the upstream host.
# **When it fails:** the remedy gives the YAML to change in `volumes/api/kong.yml`; after editing, restart the
# gateway (`docker compose restart kong`). If the upstream host is right but the tenant is still not found, see
# [02_tenant_seeding](02_tenant_seeding.ipynb).

# %%
run.checks("kong.", "envoy.", title="Gateway configuration")

# %% [markdown]
# ## Live probes through the gateway
#
# Checks `gateway.*`: the WebSocket upgrade, key auth (a request without a key must be refused), the REST route,
# CORS, and that the tenants admin API is blocked. **When it fails:** the detail shows the HTTP status and body;
# compare with the configuration results above, and see [01_setup](01_setup.ipynb) for the containers.

# %%
run.checks("gateway.", title="Live gateway probes")

# %% [markdown]
# **Gate.** Every check above has run and its result is saved with the run. This cell raises when one of them failed (or warned, with `strict`), so `papermill` and `rtbook run` exit non-zero. Read the remedies above, fix the stack, and run again. If you cannot tell which fix applies, open [05_troubleshooting](05_troubleshooting.ipynb).

# %%
run.gate()
