#!/usr/bin/env bash
# Installs everything rtbook's tests and the sandbox need on a fresh Debian machine (run as root).
# Idempotent: packages already present are skipped quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql-15)
[ -f /usr/lib/postgresql/15/lib/wal2json.so ] || need_apt+=(postgresql-15-wal2json)
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v chromium >/dev/null || need_apt+=(chromium)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
# Real load balancers for the scale-out sandbox and the lb.* reference tests.
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v caddy >/dev/null || need_apt+=(caddy)
# The docker tests run the distribution's python3 inside their containers (host /usr mounted read-only).
[ -x /usr/bin/python3 ] || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "setup: pip install -e .[dev]"
python3 -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v -E "WARNING: (Running pip as|Location)" || true

if [ -f tests/node/package.json ] && [ ! -d tests/node/node_modules/@supabase/realtime-js ]; then
  echo "setup: npm ci (tests/node)"
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi

bash scripts/start-docker.sh
