# %% [markdown]
# # 00 · Start here: a runbook for self-hosted Supabase Realtime
#
# **First step: choose what to test.** Run all cells (*Run ▸ Run All Cells*). The status box two cells down says
# whether the embedded **sandbox** is running, with a button that starts it; to test your own stack instead, set
# `target_kind = 'stack'` and `stack_dir` (plus `api_url`, `db_url`) in the next cell or in the form below, and the
# box lists the endpoints rtbook resolved. Work on a copy of these notebooks (`rtbook notebooks copy DIR`, then open
# DIR in JupyterLab), never on the ones installed with rtbook or tracked in its repository: running a notebook writes
# its outputs into it. A problem stops a cell with one red line that ends with the fix.

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
# **Target.** Values saved by the form below (`outputs/params.json` beside this notebook) are used for every parameter left at its default above; the next cell says which it used. It then checks every parameter against the runbook's one schema (an unknown or mistyped name, or anything that looks like a secret, stops here with the fix) and builds the target: the stack's files plus the URLs the live checks talk to. Secrets are read from the environment or the stack's `.env`, never from parameters.

# %%
import rtbook.runbook
run = rtbook.runbook.start("00_start_here", globals(), need_target=False)

# %% [markdown]
# ## The target under test
#
# The sandbox's state (running or not, its URLs and break scenarios), or the endpoints your stack resolves to.
# Pressing **Start the sandbox** does what `rtbook sandbox up` does in a terminal; run the next cells again
# afterwards.

# %%
import rtbook.runbook.widgets
rtbook.runbook.widgets.target_status(run.params)

# %% [markdown]
# ## What the runbook checks
#
# This runbook checks a self-hosted Realtime from its files to a live subscription, step by step, and tells you
# what to change when something is wrong. Each notebook is one step; each step says what it checks, why it matters
# for Realtime, and which notebook fixes a failure.
#
# | notebook | what it checks |
# |---|---|
# | [01_setup](01_setup.ipynb) | the compose files and `.env`, the containers (when a Docker engine answers) and Realtime's health |
# | [02_tenant_seeding](02_tenant_seeding.ipynb) | the tenant row in `_realtime.tenants`, the database prerequisites, and the seeding plan (applied only when you allow it) |
# | [03_kong_routing](03_kong_routing.ipynb) | the gateway routes for `/realtime/v1/` (Kong or Envoy) and live probes through it |
# | [04_subscription_tests](04_subscription_tests.ipynb) | heartbeat, broadcast, presence, postgres_changes and RLS per role, with a real Phoenix client |
# | [05_troubleshooting](05_troubleshooting.ipynb) | from a symptom (*Tenant not found*, *socket closes at once*, *subscribed but no changes*, *high memory*) to the deciding checks and the fix |
#
# **Two ways to use it.** In JupyterLab, fill the form below and press *Run checks*. Headless (CI, audit):
# `rtbook run --target sandbox` or `rtbook run --stack DIR --api-url URL --db-url URL` runs every notebook with
# papermill and writes an audit record to `outputs/<UTC time>-<target>/` (executed notebooks, `summary.json`,
# `summary.md`, `junit.xml`, `manifest.json`; check it later with `rtbook verify`).
#
# The parameters cell at the top holds the parameters every notebook shares. Change them there, in the form, or with
# `rtbook run -p name=value`. Secrets (JWT secret, keys, passwords) are **never** parameters.

# %% [markdown]
# ## The parameters in effect
#
# One table, the same for every notebook. `rtbook run --list-params` prints it in a terminal.

# %%
rtbook.runbook.widgets.params_table(run.params)

# %% [markdown]
# ## Guided mode
#
# Fill the form: every change is validated at once with the same rules as the headless runner. **Save parameters**
# writes `outputs/params.json` beside this notebook: notebooks 01 to 05 in this folder then use those values for every
# parameter left at its default in their own cell, and `rtbook run --params-file outputs/params.json` reads it. The
# apply confirmation is never saved. **Run checks** runs the
# chosen step against the target and shows the results with coloured statuses. When *apply_fixes* is ticked, Run
# also shows the tenant seeding plan; when it has something to write, a button under it says what (e.g. *Apply 2
# changes to tenant realtime-dev*), and nothing is written until you press it.
#
# Without JupyterLab (papermill, CI), this cell prints the parameters as text instead. After a browser reload or a
# kernel restart, JupyterLab may show *Error displaying widget: model not found* where the form was: the kernel that
# drew it is gone; run this cell again.

# %%
form = rtbook.runbook.widgets.ParamForm(run.params)
form

# %% [markdown]
# ## The path under test
#
# What a message crosses, from the client to the database: the load balancer (if any), the gateway's Realtime
# route, the Host header it sends (whose first label is the tenant), Realtime, and PostgreSQL's WAL level,
# publication and RLS. Each hop is coloured by what the checks found so far (here: the stack's files, checked in
# well under a second; notebooks 01 to 04 check the rest live), with the latency measured there.

# %%
run.path()

# %% [markdown]
# **Gate.** This notebook records no checks itself (the form shows its results; notebooks 01 to 05 record theirs), so this cell passes; it is here so that every notebook ends the same way.

# %%
run.gate()
