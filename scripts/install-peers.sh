#!/usr/bin/env bash
# Installs the real third-party plugins berth's peer test tiers run against. Nothing here is used
# by berth itself. Everything comes from crates.io, PyPI and Debian's apt; versions are pinned.
#
#   cfgd-csi 0.8.0 (crates.io)  a real CSI node plugin (tonic server, read-only bind mounts);
#                               its build needs protoc and the well-known types
#                               (Debian protobuf-compiler, libprotobuf-dev).
#
#   buttervolume, docker-volume-easyfuse (PyPI)  real Docker volume plugins, through
#                               scripts/install-dvdi-peers.sh (btrfs-progs, fuse3, bindfs from apt).
#
# Installs into ${BERTH_PEERS_DIR:-/opt/berth-peers}; the test tiers look there (or at the paths
# in BERTH_CFGD_CSI) and run whenever the binaries are present. A second run is a no-op.
set -euo pipefail

PEERS_DIR="${BERTH_PEERS_DIR:-/opt/berth-peers}"
CFGD_VERSION="0.8.0"

apt_install() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-peers: need $* but not root or no apt-get; skipping" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "$@"
}

install_cfgd_csi() {
  local root="${PEERS_DIR}/cfgd-csi"
  local bin="${root}/bin/cfgd-csi"
  if [ -x "${bin}" ] && [ -f "${root}/VERSION" ] && [ "$(cat "${root}/VERSION")" = "${CFGD_VERSION}" ]; then
    echo "install-peers: cfgd-csi ${CFGD_VERSION} present at ${bin}"
    return 0
  fi
  # protoc plus the well-known types (google/protobuf/*.proto live in libprotobuf-dev).
  if ! command -v protoc >/dev/null 2>&1 || [ ! -f /usr/include/google/protobuf/descriptor.proto ]; then
    apt_install protobuf-compiler libprotobuf-dev || return 0
  fi
  echo "install-peers: building cfgd-csi ${CFGD_VERSION} from crates.io (about 14 minutes on 2 cores)"
  mkdir -p "${root}"
  CARGO_TARGET_DIR="${PEERS_DIR}/.cfgd-target" \
    cargo install --locked cfgd-csi --version "${CFGD_VERSION}" --root "${root}"
  echo "${CFGD_VERSION}" > "${root}/VERSION"
  rm -rf "${PEERS_DIR}/.cfgd-target"
  echo "install-peers: cfgd-csi installed at ${bin}"
}

mkdir -p "${PEERS_DIR}"
install_cfgd_csi
bash "$(dirname "$0")/install-dvdi-peers.sh"
