#!/usr/bin/env bash
# The test command (README): installs what the privileged mount tests need when running as root
# and it is missing (mkfs.ext4, mkfs.xfs; the VM tools of the project-quota tier, see
# scripts/install-vm.sh), then runs every test of the workspace. Extra
# arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/install-test-deps.sh
  # The project-quota tier runs in a VM when this kernel cannot mount prjquota.
  bash scripts/install-vm.sh
else
  echo "test.sh: not root: the privileged mount tests will skip (they never skip in CI)" >&2
fi
cargo test --workspace --locked "$@"
