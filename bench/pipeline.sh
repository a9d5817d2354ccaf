#!/usr/bin/env bash
# Pipeline benchmark (issue 6): 1,000 small documents uploaded through the
# gateway, parsed, chunked and indexed until searchable (documents/s), then
# 9,000 more so that 10,000 are indexed, and query latency over them
# (p50/p99 through the gateway). `echod up` (every service and the worker)
# runs on core 0, the load generator on core 1.
# Usage: bench/pipeline.sh [first batch] [second batch] [queries]
# PDF_LINES=N: one-page PDFs of N lines instead of small text documents.
# After the first batch, bench/cpu.py reports where echod's CPU time went
# per document (parse workers, search index, SQLite, services).
# QUEUE=postgres: the job queue in a PostgreSQL database made for the run
# (ECHO_BENCH_POSTGRES, default postgres://postgres@127.0.0.1:5432) and
# dropped after; QUEUE=nats: on NATS JetStream (ECHO_BENCH_NATS, default
# nats://127.0.0.1:4222) in a stream made for the run and deleted after.
# Default: SQLite under the data directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FIRST="${1:-1000}"; SECOND="${2:-9000}"; QUERIES="${3:-500}"

cargo build --release -q -p echod
ECHOD=target/release/echod
WORK="$(mktemp -d)"
PID=""
RUN="bench_$$"
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"
  case "${QUEUE:-}" in
    postgres) psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $RUN" || true ;;
    nats) python3 bench/nats_delete_queue.py "$NATS" "${RUN^^}" || true ;;
  esac
}
trap cleanup EXIT
PG="${ECHO_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
NATS="${ECHO_BENCH_NATS:-nats://127.0.0.1:4222}"
case "${QUEUE:-sqlite}" in
  sqlite) ;;
  postgres) psql -q "$PG/postgres" -c "CREATE DATABASE $RUN"; export ECHO_QUEUE_URL="$PG/$RUN" ;;
  nats) export ECHO_NATS_URL="$NATS" ECHO_QUEUE_NAME="${RUN^^}" ;;
  *) echo "QUEUE must be sqlite, postgres or nats" >&2; exit 2 ;;
esac

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cat > "$WORK/gateway.toml" <<TOML
[rate_limit]
# No limits: one user sends all the load.
TOML

export ECHO_LOG=warn
echo "bench user's password" | "$ECHOD" --data-dir "$WORK/data" user add bench --password-stdin >/dev/null
taskset -c 0 "$ECHOD" --data-dir "$WORK/data" up --listen "127.0.0.1:$(free_port)" \
  --audit-listen "127.0.0.1:$(free_port)" --gateway-listen "127.0.0.1:$(free_port)" \
  --docs-listen "127.0.0.1:$(free_port)" --parser-listen "127.0.0.1:$(free_port)" \
  --config "$WORK/gateway.toml" > "$WORK/up.out" &
PID=$!
for _ in $(seq 1 200); do grep -q '^up ' "$WORK/up.out" 2>/dev/null && break; sleep 0.1; done
GW="$(awk '/^up / {print $2}' "$WORK/up.out")"
[ -n "$GW" ] || { cat "$WORK/up.out"; exit 1; }

python3 bench/cpu.py snapshot "$PID" > "$WORK/cpu-before.json"
taskset -c 1 python3 bench/pipeline.py "$GW" bench "bench user's password" "$FIRST" 0
python3 bench/cpu.py snapshot "$PID" > "$WORK/cpu-after.json"
python3 bench/cpu.py report "$WORK/cpu-before.json" "$WORK/cpu-after.json" "$FIRST"
# The parser alone, with the worker's own service token.
ISSUER="http://$(awk '/^ready / {print $2; exit}' "$WORK/up.out")"
PARSER="http://$(awk '/^ready / {n++} n==5 {print $2; exit}' "$WORK/up.out")"
TOKEN="$(curl -sf -u "worker:$(cat "$WORK/data/worker-client.secret")" -d grant_type=client_credentials \
  -d audience=parser "$ISSUER/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
taskset -c 1 python3 bench/pipeline.py --parse-only "$PARSER" "$TOKEN" "$FIRST"
taskset -c 1 python3 bench/pipeline.py "$GW" bench "bench user's password" "$SECOND" "$QUERIES"
