#!/usr/bin/env bash
# Starts a Docker engine suited to this machine (no bridge, no iptables) if none answers.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null; then echo "start-docker: dockerd not installed" >&2; exit 1; fi
echo "setup: starting dockerd"
nohup dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs >/tmp/rtbook-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "start-docker: dockerd did not answer within 60 s; see /tmp/rtbook-dockerd.log" >&2
exit 1
