#!/usr/bin/env bash
# `make up`: an all-in-one Atoll on this host, idempotent.
#
#   1. a Docker Engine answers on /var/run/docker.sock (started if needed);
#   2. the demo images exist (built offline from busybox-static when absent);
#   3. the coordinator runs on its embedded store, the agent on this host;
#   4. the examples are applied (scripts/apply-examples.sh), and `get nodes` / `get pods`
#      are printed.
#
# Everything lives under RUN_DIR (default .run/): logs in RUN_DIR/logs,
# pid files in RUN_DIR/pids, the store in RUN_DIR/coordinator, the agent's
# state in RUN_DIR/agent. `make down` stops what this started.
#
# Credentials: the coordinator makes its CA and writes an admin client config,
# RUN_DIR/coordinator/admin.conf; the CLI here uses it through ATOLL_CONFIG,
# and ~/.atoll/config points at it unless that file already exists. The agent
# joins once with a one-use token and keeps its certificate in RUN_DIR/agent/pki.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR=${1:-$ROOT/.run}
VENV=${VENV:-$ROOT/.venv}
SERVER=${ATOLL_SERVER:-127.0.0.1:6443}
DOCKER_SOCK=${DOCKER_SOCK:-/var/run/docker.sock}
CLI=("$VENV/bin/coordinator" --server "$SERVER")
export ATOLL_CONFIG="$RUN_DIR/coordinator/admin.conf"
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids"

say() { printf '==> %s\n' "$*"; }

alive() { [[ -f "$RUN_DIR/pids/$1" ]] && kill -0 "$(cat "$RUN_DIR/pids/$1")" 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "timed out waiting for $what" >&2
      return 1
    fi
    sleep 0.5
  done
}

engine_answers() { DOCKER_HOST="unix://$DOCKER_SOCK" docker version --format '{{.Server.Version}}'; }

# 1. The Docker Engine.
if ! engine_answers >/dev/null 2>&1; then
  if [[ -d /run/systemd/system ]] && systemctl list-unit-files docker.service >/dev/null 2>&1; then
    say "starting docker.service"
    systemctl start docker
  else
    say "starting dockerd (no systemd here); log: $RUN_DIR/logs/dockerd.log"
    setsid dockerd --live-restore >"$RUN_DIR/logs/dockerd.log" 2>&1 < /dev/null &
    echo $! >"$RUN_DIR/pids/dockerd"
  fi
  wait_for 60 "the Docker Engine" engine_answers
fi
say "Docker Engine $(engine_answers) on $DOCKER_SOCK"

# 2. Demo images (no registry needed).
"$VENV/bin/python" "$ROOT/scripts/demo_images.py" --docker-host "unix://$DOCKER_SOCK"

# 3. Coordinator and agent.
if ! alive coordinator; then
  say "starting the coordinator on $SERVER; log: $RUN_DIR/logs/coordinator.log"
  setsid "$VENV/bin/coordinator" serve --listen "$SERVER" --token-listen "${SERVER%:*}:6444" \
    --data-dir "$RUN_DIR/coordinator" >>"$RUN_DIR/logs/coordinator.log" 2>&1 < /dev/null &
  echo $! >"$RUN_DIR/pids/coordinator"
fi
wait_for 30 "the admin client config" test -s "$ATOLL_CONFIG"
wait_for 30 "the coordinator API" "${CLI[@]}" get nodes
# The CLI of the README finds the admin config by itself.
USER_CONFIG="$HOME/.atoll/config"
if [[ ! -e $USER_CONFIG || -L $USER_CONFIG ]]; then
  mkdir -p "$(dirname "$USER_CONFIG")"
  ln -sfn "$ATOLL_CONFIG" "$USER_CONFIG"
  say "CLI credentials: $USER_CONFIG -> $ATOLL_CONFIG"
else
  say "$USER_CONFIG exists and is left alone; use: export ATOLL_CONFIG=$ATOLL_CONFIG"
fi

NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]_' '[:lower:]-')}
if ! alive agent; then
  JOIN=()
  if [[ ! -s $RUN_DIR/agent/pki/node.crt ]]; then
    # First start: a one-use token, passed through the environment (not visible in ps).
    read -r token ca_hash < <("${CLI[@]}" token create --ttl 10m --uses 1 --description "make up" -o json |
      "$VENV/bin/python" -c 'import json, sys; d = json.load(sys.stdin); print(d["token"], d["caHash"])')
    export ATOLL_AGENT_JOIN_TOKEN=$token
    JOIN=(--ca-hash "$ca_hash")
  fi
  say "starting the agent as node $NODE_NAME; log: $RUN_DIR/logs/agent.log"
  setsid "$VENV/bin/atoll-agent" --coordinator "$SERVER" --node-name "$NODE_NAME" "${JOIN[@]}" \
    --docker-host "unix://$DOCKER_SOCK" --state-dir "$RUN_DIR/agent" --listen 127.0.0.1:10250 \
    >>"$RUN_DIR/logs/agent.log" 2>&1 < /dev/null &
  echo $! >"$RUN_DIR/pids/agent"
fi
node_ready() { "${CLI[@]}" get nodes "$NODE_NAME" --no-headers | grep -qw Ready; }
wait_for 60 "node $NODE_NAME to be Ready" node_ready

# 4. The examples. One the user changed where apply cannot update it is reported and left alone.
say "applying examples/"
"$ROOT/scripts/apply-examples.sh" "$ROOT/examples" "${CLI[@]}"
pods_running() { ! "${CLI[@]}" get pods --no-headers | grep -vq Running; }
wait_for 120 "the example pods to run" pods_running || true

echo
"${CLI[@]}" get nodes
echo
"${CLI[@]}" get pods
echo
say "try: curl http://127.0.0.1:80/   (logs and state under $RUN_DIR)"
