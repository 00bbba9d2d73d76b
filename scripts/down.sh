#!/usr/bin/env bash
# `make down`: stop what `make up` started (agent, coordinator, and dockerd when
# make up had to start it), and remove the containers the agent ran.
# The store and the agent's state stay under RUN_DIR; PURGE=1 removes them too.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR=${1:-$ROOT/.run}

stop() { # stop NAME: SIGTERM, then SIGKILL after 10 s
  local pidfile="$RUN_DIR/pids/$1"
  [[ -f $pidfile ]] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    echo "==> stopping $1 ($pid)"
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

stop agent
stop coordinator
if docker version >/dev/null 2>&1; then
  ids=$(docker ps -aq --filter label=io.atoll.managed=true)
  if [[ -n $ids ]]; then
    echo "==> removing $(wc -w <<<"$ids") Atoll containers"
    docker rm -f $ids >/dev/null
  fi
fi
started_dockerd=0
[[ -f $RUN_DIR/pids/dockerd ]] && started_dockerd=1
stop dockerd
if [[ $started_dockerd == 1 ]]; then
  # dockerd leaves its bridges behind when it exits; the engine was ours, so are they.
  for bridge in docker0 atoll0; do
    if ip link show "$bridge" >/dev/null 2>&1; then
      echo "==> removing bridge $bridge"
      ip link delete "$bridge"
    fi
  done
fi
# The agent leaves its kernel state in place when it stops (so a restart changes
# nothing); taking the all-in-one down removes its service rules too.
if command -v nft >/dev/null && nft list table ip atoll >/dev/null 2>&1; then
  echo "==> removing the atoll nftables table"
  nft delete table ip atoll
fi
if [[ ${PURGE:-0} == 1 ]]; then
  echo "==> removing $RUN_DIR"
  rm -rf "$RUN_DIR"
fi
