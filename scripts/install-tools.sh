#!/usr/bin/env bash
# Installs the tools spate's tests need on a fresh machine; idempotent (skips what is present).
#   - s3s-fs 0.14.1 (file-backed S3 server; 0.15+ needs rustc 1.96)
#   - moto[server] 5.2.5 in .ci/venv (exact conditional-create semantics, in memory)
#   - cargo-fuzz + the nightly toolchain for fuzz smoke runs
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
  echo "installing s3s-fs 0.14.1"
  cargo install s3s-fs@0.14.1 --features binary --locked --quiet
fi

if [ ! -x .ci/venv/bin/moto_server ]; then
  echo "installing moto[server] 5.2.5 into .ci/venv"
  python3 -m venv .ci/venv
  .ci/venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo-fuzz" ]; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
