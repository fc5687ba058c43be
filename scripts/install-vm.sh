#!/usr/bin/env bash
# Installs what the project-quota test tier needs when the running kernel cannot mount XFS or
# ext4 with `prjquota` (this project's CI machines: no CONFIG_XFS_QUOTA, no CONFIG_QFMT_V2):
# a VM that boots Debian's kernel, which has both, and shares the host's filesystem.
#
#   linux-image-amd64, qemu-system-x86, busybox-static   (Debian apt)
#   virtme-ng 1.42                                       (PyPI, in a venv)
#
# Installs under ${BERTH_VM_DIR:-/opt/berth-vm}; crates/mount/tests/quota.rs (vm_tier) looks
# there. Nothing here is used by berth itself. A second run is a no-op. Run as root.
set -euo pipefail

VM_DIR="${BERTH_VM_DIR:-/opt/berth-vm}"
VIRTME_NG_VERSION="1.42"
PYTHON="${BERTH_PYTHON:-python3}"

log() { echo "install-vm: $*"; }

missing=()
for p in linux-image-amd64 qemu-system-x86 busybox-static; do
  if ! dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("${p}")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-vm: need ${missing[*]} but not root or no apt-get" >&2
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  log "Debian packages present: linux-image-amd64 qemu-system-x86 busybox-static"
fi

if [ -x "${VM_DIR}/bin/vng" ] && [ -f "${VM_DIR}/VERSION" ] && [ "$(cat "${VM_DIR}/VERSION")" = "${VIRTME_NG_VERSION}" ]; then
  log "virtme-ng ${VIRTME_NG_VERSION} present in ${VM_DIR}"
  exit 0
fi
log "installing virtme-ng ${VIRTME_NG_VERSION} into ${VM_DIR}"
"${PYTHON}" -m venv "${VM_DIR}"
"${VM_DIR}/bin/pip" install -q "virtme-ng==${VIRTME_NG_VERSION}"
echo "${VIRTME_NG_VERSION}" > "${VM_DIR}/VERSION"
log "done"
