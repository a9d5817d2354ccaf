# Sourced by bench/identity.sh and bench/identity-lifecycle.sh: builds the
# release echod, makes a throw-away data directory with a client-credentials
# client `svc-a` (secret in $SECRET), and defines start/stop for
# `echod serve identity` pinned to core 0. Set DURATION before sourcing.
# A script may define cleanup_extra, run on exit before the data is removed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER="${PEER:-$ROOT/../shared/peer}"
OUT="$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)${OUT_SUFFIX:-}"
PORT="${PORT:-18081}"
export DURATION
mkdir -p "$OUT"

cargo build --release -p echod --manifest-path "$ROOT/Cargo.toml" >&2
ECHOD="$ROOT/target/release/echod"
DATA="$(mktemp -d)"
trap 'kill "${PID:-}" 2>/dev/null || true; if declare -F cleanup_extra >/dev/null; then cleanup_extra; fi; rm -rf "$DATA"' EXIT
# Default log level: audit events (one per token) are written, as in production.

SECRET="$(head -c 32 /dev/urandom | base64 | tr -d '=+/' | head -c 43)"
echo "$SECRET" | "$ECHOD" --data-dir "$DATA" client add svc-a --secret-stdin \
  --grant client_credentials --audience logging-service --scope logs:write >/dev/null

# Starts echod on core 0; sets PID and START_MS (spawn to `ready` line).
start() {
  local t0 t1
  t0=$(date +%s%N)
  exec 3< <(taskset -c 0 "$ECHOD" --data-dir "$DATA" serve identity --listen "127.0.0.1:$PORT" 2>>"$OUT/echod.log"; echo "exited")
  local line=""
  while read -r line <&3; do [[ "$line" == ready* || "$line" == exited ]] && break; done
  t1=$(date +%s%N)
  [[ "$line" == ready* ]] || { echo "echod did not start" >&2; exit 1; }
  PID="$(pgrep -n -f "echod --data-dir $DATA serve identity")"
  START_MS=$(( (t1 - t0) / 1000000 ))
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; sleep 0.3; }
