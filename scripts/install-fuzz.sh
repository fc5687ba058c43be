#!/usr/bin/env bash
# Installs what a fuzz campaign needs (not CI: CI replays the regression corpus with plain
# `cargo test`): cargo-fuzz from crates.io and a C++ compiler for libFuzzer's runtime.
# Idempotent.
set -euo pipefail
CARGO_FUZZ_VERSION=0.13.2
if ! command -v c++ >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && apt-get install -y -qq g++ >/dev/null
  else
    echo "install-fuzz.sh: no C++ compiler (apt-get install g++)" >&2
    exit 1
  fi
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
cargo fuzz --version
