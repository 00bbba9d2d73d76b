#!/usr/bin/env bash
# Build the Atoll RPMs from this tree, offline:
#
#   packaging/build-rpm.sh [OUT_DIR [rpmbuild options...]]
#
# OUT_DIR (default build/rpm) becomes rpmbuild's top directory: the source
# tarball lands in SOURCES/, the spec that was built in SPECS/, the packages
# in RPMS/x86_64/ and SRPMS/, the full log in rpmbuild.log. The paths of the
# built packages are printed, one a line.
#
# ATOLL_PYTHON is the interpreter that builds (default: the repository's
# venv, made by `make venv`): it needs only pip, and must be of the target
# Python version, ATOLL_PYTHON_VERSION (default 3.11). The bundled wheels come
# from build/wheelhouse/cpXY (`make wheelhouse`, the one step that needs the
# network) and go into the source RPM as its second source.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/build/rpm}")
shift $(($# > 0 ? 1 : 0))
PYTHON=${ATOLL_PYTHON:-$ROOT/.venv/bin/python}
PYVER=${ATOLL_PYTHON_VERSION:-3.11}
ABI=cp${PYVER/./}

if [[ ! -x $PYTHON ]]; then
  echo "build-rpm: $PYTHON not found: run make venv, or set ATOLL_PYTHON" >&2
  exit 1
fi
for tool in rpmbuild git tar; do
  if ! command -v "$tool" >/dev/null; then
    echo "build-rpm: $tool not found: run scripts/install-deps.sh" >&2
    exit 1
  fi
done

# pyproject.toml is the only place the version is written.
version=$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
  "$ROOT/pyproject.toml")
name=atoll-$version

# Only the directories this script fills are emptied: OUT may hold other things.
for dir in BUILD BUILDROOT RPMS SRPMS SOURCES SPECS tmp; do
  rm -rf "${OUT:?}/$dir"
  mkdir -p "$OUT/$dir"
done

# Source tarball: the tree as git sees it, committed or not (what `make test`
# tests), without what .gitignore excludes (the venv, build output, atoll/v1,
# which the build generates again). Files deleted but not yet committed are
# left out. Owners and dates are fixed, so the same tree gives the same bytes.
# The date is the last commit's, or SOURCE_DATE_EPOCH when set.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}
git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' path; do
    if [[ -f $ROOT/$path ]]; then printf '%s\0' "$path"; fi
  done |
  tar -C "$ROOT" --null --files-from=- --transform="s,^,$name/," --sort=name \
    --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -cf - |
  gzip -n >"$OUT/SOURCES/$name.tar.gz"

# The locked wheels, packed the same way (they are compressed already).
wheels=$("$PYTHON" "$ROOT/packaging/wheelhouse.py" list --python-version "$PYVER")
printf '%s\n' "$wheels" | xargs -n1 basename |
  tar -C "$(dirname "$(printf '%s\n' "$wheels" | head -n1)")" --files-from=- --transform="s,^,wheels/," \
    --sort=name --owner=0 --group=0 --numeric-owner --mode=0644 --mtime="@$epoch" \
    -cf "$OUT/SOURCES/$name-wheels-$ABI.tar"

# The spec that is built, and stored in the source RPM, carries the version
# and the target Python version.
{
  printf '%%global atoll_version %s\n' "$version"
  printf '%%global atoll_python_version %s\n' "$PYVER"
  cat "$ROOT/packaging/atoll.spec"
} >"$OUT/SPECS/atoll.spec"

# BuildRequires name Fedora packages. Where rpm does not even know itself
# (Debian: its RPM database is empty) they cannot be checked; ATOLL_PYTHON
# provides what they stand for.
nodeps=()
if ! rpm -q rpm >/dev/null 2>&1; then
  nodeps=(--nodeps)
fi

# Reproducible: every timestamp in the packages is that date.
export SOURCE_DATE_EPOCH=$epoch
if ! rpmbuild -ba "${nodeps[@]}" \
  --define "_topdir $OUT" \
  --define "_tmppath $OUT/tmp" \
  --define "atoll_python $PYTHON" \
  "$@" "$OUT/SPECS/atoll.spec" >"$OUT/rpmbuild.log" 2>&1; then
  tail -n 40 "$OUT/rpmbuild.log" >&2
  echo "build-rpm: rpmbuild failed; full log: $OUT/rpmbuild.log" >&2
  exit 1
fi

find "$OUT/RPMS" "$OUT/SRPMS" -name '*.rpm' | sort
