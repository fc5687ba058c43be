#!/usr/bin/env bash
# Checks (and where possible installs) what berth's build and tests need on a fresh machine:
# stable Rust with rustfmt and clippy. Nothing else is needed yet: protobuf code is generated
# by protox (pure Rust), so no system protoc.
set -euo pipefail

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
  echo "setup: cargo not found; install stable Rust (rustup) first" >&2
  exit 1
fi
if need rustup; then
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
      rustup component add "${component}"
    fi
  done
fi
cargo --version
cargo fmt --version
cargo clippy --version
