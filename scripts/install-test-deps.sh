#!/usr/bin/env bash
# Installs the programs the privileged test tier of berth-mount needs to make test filesystems
# (mkfs.ext4, mkfs.xfs) and loop devices, only when they are missing. Debian apt, run as root.
# Nothing here is used by berth itself: the tests run these fixed programs with argv, no shell.
set -euo pipefail

missing=()
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v mkfs.xfs >/dev/null 2>&1 || missing+=(xfsprogs)

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-test-deps: mkfs.ext4 and mkfs.xfs present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing ${missing[*]} and not root; install them or run as root" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: missing ${missing[*]} and no apt-get on this machine" >&2
  exit 1
fi

echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
