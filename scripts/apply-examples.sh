#!/usr/bin/env bash
# Step 4 of `make up` (scripts/up.sh): apply examples/ with the `coordinator` CLI.
#
#   scripts/apply-examples.sh EXAMPLES_DIR COORDINATOR [GLOBAL FLAGS...]
#   scripts/apply-examples.sh examples .venv/bin/coordinator --server 127.0.0.1:6443
#
# Pods first, then the controllers that adopt them, then services, in one
# `apply` (every file is validated before anything is applied). An example
# whose object the user changed where apply cannot update it (the 2015
# article's own apache pod under the name `apache`, say) is reported on one
# line and left as it is, and the rest is applied: that is not a failure.
# Anything else is (a broken file, a refused request, no coordinator), with
# the file and the object named.
set -euo pipefail

if (($# < 2)); then
  echo "usage: $0 EXAMPLES_DIR COORDINATOR [GLOBAL FLAGS...]" >&2
  exit 2
fi
dir=$1
shift

files=()
for manifest in apache-pod.json apache-pod-v1.yaml apache-controller.json apache-v1.yaml frontend-service.json guestbook-v1.yaml; do
  files+=(-f "$dir/$manifest")
done
exec "$@" apply --skip-conflicts "${files[@]}"
