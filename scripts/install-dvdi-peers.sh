#!/usr/bin/env bash
# Installs the real Docker volume plugins that berth-dvdi's peer test tier
# (crates/dvdi/tests/peers.rs) and its benchmark (benches/benches/dvdi.rs) run against.
# Nothing here is used by berth itself. Versions are pinned; a second run is a no-op.
#
#   buttervolume 3.13            (PyPI) BTRFS subvolumes; needs btrfs-progs (Debian) and a
#                                loop-mounted btrfs image, which the tests make themselves.
#   docker-volume-easyfuse 0.2.1 (PyPI) FUSE mounts with per-ID reference counting; the tests
#                                use bindfs (Debian) as the FUSE file system, through fuse3.
#
# Each plugin gets its own venv under ${BERTH_PEERS_DIR:-/opt/berth-peers}:
#   <dir>/buttervolume/bin/buttervolume
#   <dir>/docker-volume-easyfuse/bin/python -m easyfuse
# and a VERSION file written last, so an interrupted install is redone on the next run.
set -euo pipefail

PEERS_DIR="${BERTH_PEERS_DIR:-/opt/berth-peers}"
PYTHON="${BERTH_PYTHON:-python3}"
BUTTERVOLUME_VERSION="3.13"
EASYFUSE_VERSION="0.2.1"
APT_UPDATED=""

log() { echo "install-dvdi-peers: $*"; }

apt_install() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-dvdi-peers: need $* but not root or no apt-get" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${APT_UPDATED}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "$@"
}

# Installs the Debian packages that are missing (dpkg-query tells), nothing when all are there.
apt_ensure() {
  local missing=()
  local p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("${p}")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "Debian packages present: $*"
    return 0
  fi
  log "installing Debian packages: ${missing[*]}"
  apt_install "${missing[@]}"
}

# venv_install <dir name> <pip requirement> <version>
venv_install() {
  local name="$1" req="$2" version="$3"
  local root="${PEERS_DIR}/${name}"
  if [ -x "${root}/bin/python" ] && [ -f "${root}/VERSION" ] && [ "$(cat "${root}/VERSION")" = "${version}" ]; then
    log "${name} ${version} present in ${root}"
    return 0
  fi
  log "installing ${req} into ${root}"
  rm -rf "${root}"
  if ! "${PYTHON}" -m venv "${root}" 2>/dev/null; then
    apt_ensure python3-venv
    "${PYTHON}" -m venv "${root}"
  fi
  "${root}/bin/pip" install -q --disable-pip-version-check "${req}"
  echo "${version}" > "${root}/VERSION"
  log "${name} ${version} installed"
}

mkdir -p "${PEERS_DIR}"
# btrfs-progs: mkfs.btrfs for buttervolume's loop file (and its `btrfs subvolume` calls);
# fuse3 + bindfs: the FUSE file system easyfuse mounts (`mount -t fuse bindfs#<dir>`).
apt_ensure btrfs-progs fuse3 bindfs
venv_install buttervolume "buttervolume==${BUTTERVOLUME_VERSION}" "${BUTTERVOLUME_VERSION}"
venv_install docker-volume-easyfuse "docker-volume-easyfuse==${EASYFUSE_VERSION}" "${EASYFUSE_VERSION}"
log "done (${PEERS_DIR})"
