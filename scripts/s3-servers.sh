#!/usr/bin/env bash
# Real S3-compatible servers on 127.0.0.1 for spate's tests (sourced by scripts/test.sh and .ci/run).
#
#   source scripts/s3-servers.sh; s3_servers_start; trap s3_servers_stop EXIT
#
# Starts, on random free loopback ports:
#   * moto 5.2.5 (.ci/venv/bin/moto_server): exact conditional-create semantics (atomic in practice),
#     in memory (does not survive a restart, ignores credentials);
#   * s3s-fs 0.14.1 (~/.cargo/bin/s3s-fs): file-backed, survives restarts, checks SigV4; its
#     If-None-Match is check-then-write, NOT atomic under concurrent creators.
# Creates bucket `spate-test` on both, waits for readiness, and exports:
#   SPATE_TEST_S3_MOTO=http://127.0.0.1:P        SPATE_TEST_S3_S3SFS=http://127.0.0.1:Q
#   SPATE_TEST_S3_BUCKET=spate-test              SPATE_TEST_S3_ACCESS_KEY / _SECRET_KEY
#   SPATE_TEST_S3SFS_BIN, SPATE_TEST_S3SFS_ROOT, SPATE_TEST_S3SFS_PORT, SPATE_TEST_S3SFS_PIDFILE
#     (the restart test kills s3s-fs with SIGKILL and restarts it on the same root and port; it
#      writes the new PID to the pid file so s3_servers_stop still stops it)
# Missing tools are installed via scripts/install-tools.sh. Under CI=true any failure is fatal;
# otherwise a failure prints a warning and the S3 tests skip loudly.

_s3_fail() {
  echo "s3-servers: $*" >&2
  if [ "${CI:-}" = "true" ]; then
    s3_servers_stop
    exit 1
  fi
  return 1
}

_s3_freeport() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

_s3_waitport() {
  local port=$1 pid=$2
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

s3_servers_start() {
  local root_dir
  root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  local venv="$root_dir/.ci/venv"
  local s3sfs_bin
  s3sfs_bin="$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")"
  if [ ! -x "$s3sfs_bin" ] || [ ! -x "$venv/bin/moto_server" ]; then
    echo "s3-servers: installing missing tools (scripts/install-tools.sh)" >&2
    bash "$root_dir/scripts/install-tools.sh" || { _s3_fail "tool install failed"; return 1; }
    s3sfs_bin="$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")"
  fi
  S3_SERVERS_DIR="$(mktemp -d /tmp/spate-s3.XXXXXX)"
  export S3_SERVERS_DIR
  local bucket=spate-test key=spatetestkey secret=spatetestsecret

  local moto_port
  moto_port=$(_s3_freeport)
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$S3_SERVERS_DIR/moto.log" 2>&1 &
  echo $! >"$S3_SERVERS_DIR/moto.pid"
  _s3_waitport "$moto_port" "$(cat "$S3_SERVERS_DIR/moto.pid")" \
    || { _s3_fail "moto did not start (log: $S3_SERVERS_DIR/moto.log)"; return 1; }
  "$venv/bin/python" - "$moto_port" "$bucket" <<'EOF' >"$S3_SERVERS_DIR/mkbucket.log" 2>&1 \
    || { _s3_fail "creating the moto bucket failed (log: $S3_SERVERS_DIR/mkbucket.log)"; return 1; }
import sys, boto3
from botocore.config import Config
port, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="k",
                  aws_secret_access_key="s", region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket=bucket)
EOF

  local s3s_port s3s_root="$S3_SERVERS_DIR/s3s-root"
  s3s_port=$(_s3_freeport)
  mkdir -p "$s3s_root/$bucket"
  "$s3sfs_bin" --host 127.0.0.1 --port "$s3s_port" --access-key "$key" --secret-key "$secret" \
    "$s3s_root" >"$S3_SERVERS_DIR/s3s.log" 2>&1 &
  echo $! >"$S3_SERVERS_DIR/s3s.pid"
  _s3_waitport "$s3s_port" "$(cat "$S3_SERVERS_DIR/s3s.pid")" \
    || { _s3_fail "s3s-fs did not start (log: $S3_SERVERS_DIR/s3s.log)"; return 1; }

  export SPATE_TEST_S3_MOTO="http://127.0.0.1:$moto_port"
  export SPATE_TEST_S3_S3SFS="http://127.0.0.1:$s3s_port"
  export SPATE_TEST_S3_BUCKET="$bucket"
  export SPATE_TEST_S3_ACCESS_KEY="$key"
  export SPATE_TEST_S3_SECRET_KEY="$secret"
  export SPATE_TEST_S3SFS_BIN="$s3sfs_bin"
  export SPATE_TEST_S3SFS_ROOT="$s3s_root"
  export SPATE_TEST_S3SFS_PORT="$s3s_port"
  export SPATE_TEST_S3SFS_PIDFILE="$S3_SERVERS_DIR/s3s.pid"
  echo "s3-servers: moto $SPATE_TEST_S3_MOTO (pid $(cat "$S3_SERVERS_DIR/moto.pid")), s3s-fs $SPATE_TEST_S3_S3SFS (pid $(cat "$S3_SERVERS_DIR/s3s.pid"), root $s3s_root)" >&2
}

s3_servers_stop() {
  [ -n "${S3_SERVERS_DIR:-}" ] && [ -d "$S3_SERVERS_DIR" ] || return 0
  local f pid
  for f in "$S3_SERVERS_DIR/moto.pid" "$S3_SERVERS_DIR/s3s.pid"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$S3_SERVERS_DIR"
  unset S3_SERVERS_DIR
}
