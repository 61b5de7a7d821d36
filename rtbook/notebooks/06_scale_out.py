# %% [markdown]
# # 06 · Scale-out: load balancers and Realtime clusters
#
# Once a deployment grows, a load balancer sits in front of one or more gateways and Realtime runs on several
# nodes. WebSockets then depend on the proxy (it must forward `Upgrade`/`Connection`, keep idle sockets open
# longer than the client heartbeat of 25 s, and not buffer frames) and on the nodes being **one cluster**
# (Realtime fans broadcast out with Phoenix.PubSub and shares presence with Phoenix.Tracker over distributed
# Erlang; nodes that never joined each other split the users into groups that do not see each other).
# Stickiness keeps *new* requests (long-poll, reconnects) on one node; it does not move an open WebSocket and
# never makes unclustered nodes share messages. Try it with `rtbook sandbox up --nodes 2 --lb nginx`.

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
# **Target.** The next cell checks every parameter above against the runbook's one schema (an unknown or mistyped name, or anything that looks like a secret, stops here with the fix) and builds the target: the stack's files plus the URLs the live checks talk to. Secrets are read from the environment or the stack's `.env`, never from parameters.

# %%
import rtbook.runbook
run = rtbook.runbook.start("06_scale_out", globals())
run.params

# %% [markdown]
# ## Load-balancer configuration
#
# The `lb.*` checks read the load balancer's own configuration (nginx, HAProxy, Caddy, Traefik, AWS ALB) given
# with `rtbook check --lb FILE`: upgrade headers, timeouts against the heartbeat, buffering, routes to
# `/realtime/v1/`, stickiness. When this installation has no `lb.*` checks or no file was given, the step
# notes it and moves on. **When it fails:** apply the remedy in the proxy's own syntax; a route that does not
# reach the gateway is explained in [03_kong_routing](03_kong_routing.ipynb).

# %%
run.checks("lb.", title="Load-balancer configuration")

# %% [markdown]
# ## Realtime's clustering settings
#
# The `cluster.*` checks read the clustering settings of a Realtime service that runs more than one node
# (`CLUSTER_STRATEGIES`, `DNS_NODES`, the release cookie, `ERL_AFLAGS`, `REGION`) from the stack's files.
# When this installation has none, the step notes it. **When it fails:** apply the remedy to the Realtime
# service's environment; the service's own settings are walked through in [01_setup](01_setup.ipynb).

# %%
run.checks("cluster.", title="Realtime clustering settings")

# %% [markdown]
# ## Clients spread over the nodes see each other
#
# Checks `realtime.cluster`: several clients connect through the public URL (so the load balancer spreads
# them), stay idle for a while, then each tracks a presence and sends a broadcast; every client must receive
# every other's. Against one node this passes trivially. **When it fails:** a split into groups means the
# Realtime nodes are not one cluster (release cookie, `CLUSTER_STRATEGIES`/`DNS_NODES`, `ERL_AFLAGS`); sockets
# closed during the idle time mean a proxy timeout below the heartbeat. Symptoms are walked through in
# [05_troubleshooting](05_troubleshooting.ipynb).

# %%
run.checks("realtime.cluster", title="Cluster: broadcast and presence across nodes")

# %% [markdown]
# **Gate.** Every check above has run and its result is saved with the run. This cell raises when one of them failed (or warned, with `strict`), so `papermill` and `rtbook run` exit non-zero. Read the remedies above, fix the proxy or the cluster, and run again. If you cannot tell which fix applies, open [05_troubleshooting](05_troubleshooting.ipynb).

# %%
run.gate()
