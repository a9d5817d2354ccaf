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
DURATION="${DURATION:-20}"
# ROOT, PEER, OUT, PORT, ECHOD, DATA, SECRET (client svc-a), start, stop
source "$(dirname "${BASH_SOURCE[0]}")/identity-common.sh"

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
