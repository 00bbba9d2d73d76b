#!/usr/bin/env bash
# Install the Debian packages Atoll's development, tests and `make up` need.
# Idempotent: packages already present are left alone, and apt runs only
# when something is missing. Needs root (CI and `make up` run as root).
set -euo pipefail

PACKAGES=(
  python3 python3-venv python3-dev gcc make git curl ca-certificates procps psmisc
  iproute2 iptables nftables kmod
  docker.io busybox-static iperf3
  etcd-server docker-registry
  rpm rpmlint systemd
  mariadb-server rabbitmq-server
)
# The Node.js gRPC client test (tests/functional/test_node_client.py) needs node and npm:
# Debian's, unless a node with its npm is already installed (from NodeSource, say).
if ! command -v npm >/dev/null; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing Debian packages: ${missing[*]} (run as root)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Debian's docker.io, etcd-server, mariadb-server and rabbitmq-server try to start
  # their services on install; Atoll (and its OpenStack test harness) starts its own,
  # with their own data dirs and ports, so keep the packaged ones down.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
