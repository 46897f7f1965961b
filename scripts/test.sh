#!/usr/bin/env bash
# The README's test command: runs the whole test suite.
# Starts real S3-compatible servers on 127.0.0.1 (scripts/s3-servers.sh) when available, exports
# their endpoints to the tests, and stops them by PID on exit. Under CI the servers are mandatory.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f scripts/s3-servers.sh ]; then
  # shellcheck source=/dev/null
  source scripts/s3-servers.sh
  s3_servers_start
  trap s3_servers_stop EXIT
fi

cargo test --workspace --locked "$@"
