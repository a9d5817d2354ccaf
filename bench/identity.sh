#!/usr/bin/env bash
# Side-by-side load test: `echod serve identity` and the peer provider
# (../shared/peer, panva oidc-provider), each pinned to core 0 in turn, wrk
# on core 1, with the peer's own bounded load script. Also measures idle
# resident memory and time from start to `ready`.
#
#   bench/identity.sh                 # results in bench/out/<time>/
#   DURATION=10 bench/identity.sh     # shorter runs
#   ECHO_ACCESS_TOKEN_ALG=EdDSA bench/identity.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER="${PEER:-$ROOT/../shared/peer}"
OUT="$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)"
PORT="${PORT:-18081}"
export DURATION="${DURATION:-20}"
mkdir -p "$OUT"

cargo build --release -p echod --manifest-path "$ROOT/Cargo.toml" >&2
ECHOD="$ROOT/target/release/echod"
DATA="$(mktemp -d)"
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$DATA"' EXIT
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

start; first="$START_MS"; stop
ready=()
for _ in 1 2 3 4 5; do start; ready+=("$START_MS"); stop; done
start
sleep 2
idle_kb="$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")"

echo "# echod ($(${ECHOD} --version))" | tee "$OUT/summary.md"
{
  echo "start to ready: first run (creates keys) ${first} ms; later runs ${ready[*]} ms"
  echo "idle RSS after start: $(( idle_kb / 1024 )) MiB (${idle_kb} kB)"
} | tee -a "$OUT/summary.md"

ISSUER="http://127.0.0.1:$PORT" SVC_CLIENT_ID=svc-a SVC_CLIENT_SECRET="$SECRET" SERVER_PID="$PID" \
  LOAD_OUT="$OUT/echod" "$PEER/load/run.sh" | tee "$OUT/echod.txt"
loaded_kb="$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")"
echo "RSS after load: $(( loaded_kb / 1024 )) MiB" | tee -a "$OUT/summary.md"
stop; PID=""

echo "# peer (oidc-provider)" | tee -a "$OUT/summary.md"
LOAD_OUT="$OUT/peer" "$PEER/load/run.sh" --start-peer | tee "$OUT/peer.txt"

{
  echo
  echo "## echod"; cat "$OUT/echod/results.md"
  echo
  echo "## peer"; cat "$OUT/peer/results.md"
} | tee -a "$OUT/summary.md"
echo "# results in $OUT"
