# %% [markdown]
# # 02 · Tenant seeding: the tenant row and the database
#
# Realtime serves a request only when `_realtime.tenants` holds a row whose `external_id` is the first label of
# the Host header, with exactly **one** `postgres_cdc_rls` extension row holding the encrypted database settings
# (there are no `broadcast` or `presence` rows, whatever the guides say). Postgres changes further need
# `wal_level=logical`, wal2json, the `supabase_realtime` publication, free replication slots, and RLS that lets the
# subscriber's role read the rows.

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
run = rtbook.runbook.start("02_tenant_seeding", globals())
run.params

# %% [markdown]
# ## The database
#
# Checks `db.*`: connection, `wal_level`, the publication and its tables, replica identity, primary keys, RLS
# policies, replication slots and capacity. **When it fails:** each remedy is the SQL to run; subscriptions are
# tested end to end in [04_subscription_tests](04_subscription_tests.ipynb).

# %%
run.checks("db.", title="Database prerequisites")

# %% [markdown]
# ## The tenant row
#
# Checks `tenant.*`: the row for the tenant, its extension row and decrypted settings, its JWT secret against
# `API_JWT_SECRET`, its limits. **When it fails:** the seeding plan below says what would fix it; a *Tenant not found* that
# persists after seeding is walked through in [05_troubleshooting](05_troubleshooting.ipynb).

# %%
run.checks("tenant.", title="The tenant row")

# %% [markdown]
# ## The seeding plan
#
# What rtbook would write to make the tenant row match the stack, computed without writing anything. Review it.

# %%
plan = run.seeding_plan()
plan

# %% [markdown]
# ## Apply (only when you allow it)
#
# Writes the plan only when `apply_fixes` **and** `confirm_apply` are true; otherwise this is a dry run and says
# so. After applying, the `tenant.*` and `db.*` checks run again and their new results replace the old ones.

# %%
run.apply_plan(plan)

# %% [markdown]
# ## Rename the tenant
#
# A rename touches five places that must agree: the container name or network alias, the gateway's upstream host
# (Kong service URL; Envoy cluster address and `host_rewrite_literal`), the healthcheck URL,
# `SELF_HOST_TENANT_NAME`, and the rows (the tenant plus its one `postgres_cdc_rls` row, encrypted under
# `DB_ENC_KEY`). The plan is a dry run shown as diffs, with the order of operations that keeps every request working;
# the files are written under the run folder (`tenant-plans/`) for you to copy, never into the stack. Edit the name
# to plan your own rename (empty skips it); CLI: `rtbook tenant rename NEW --stack DIR --out DIR`.

# %%
renamed = run.tenant_change("rename", "my-tenant")
renamed

# %% [markdown]
# ## Serve a second tenant
#
# One Realtime can serve several tenants: the added tenant gets its rows, a gateway route for its own public host
# (Kong `hosts:` on the route, an Envoy virtual host) whose upstream Host starts with the tenant, and a network alias
# for that host. CLI: `rtbook tenant add NAME --public-host HOST`, then `rtbook check --all-tenants`.

# %%
added = run.tenant_change("add", "tenant-b", "tenant-b.localhost")
added

# %% [markdown]
# **Apply the rename's rows** (step 1 of its order of operations) with the same two switches as the seeding plan:
# `apply_fixes` and `confirm_apply` (the form's confirm button). Without both, nothing is written; the example names
# (`my-tenant`, `tenant-b`) are written only on the sandbox, so seeding your stack never creates them.

# %%
run.apply_plan(renamed)

# %% [markdown]
# **Apply the added tenant's rows**, behind the same switches.

# %%
run.apply_plan(added)

# %% [markdown]
# **Gate.** Every check above has run and its result is saved with the run. This cell raises when one of them failed (or warned, with `strict`), so `papermill` and `rtbook run` exit non-zero. Read the remedies above, fix the stack, and run again. If you cannot tell which fix applies, open [05_troubleshooting](05_troubleshooting.ipynb).

# %%
run.gate()
