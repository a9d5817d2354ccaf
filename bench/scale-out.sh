#!/usr/bin/env bash
# Scale-out figures (issue 16), side by side in one run, release build:
#   1. token grants/s (client_credentials) of `echod serve identity` on
#      SQLite vs on PostgreSQL (the machine's, over loopback);
#   2. session lookups/s: requests with a session cookie through the gateway
#      to a trivial upstream, sessions in SQLite vs in Redis;
#   3. token grants/s on PostgreSQL: one identity process vs two replicas
#      behind HAProxy (round robin), and what each core gives;
#   4. what the audit writer's `record` costs the caller, its write-ahead
#      journal included (criterion, echo-audit-client's `record` bench);
#   5. search latency over 10,000 documents, tantivy vs PostgreSQL
#      full-text search (echo-docs' `query` bench: p50/p99 and criterion).
# Pinning: the measured echod on core 0, wrk (one thread) on core 1; the two
# replicas of row 3 one on each core, HAProxy and wrk beside them (this
# machine has two cores, so the replicated row shares its cores with the
# load generator: its per-core figure is a lower bound).
# Needs wrk, haproxy, psql (PostgreSQL at $PG, default the machine's) and
# Redis at $REDIS. Usage: bench/scale-out.sh [seconds per row, default 10]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_RUN="${1:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
REDIS="${REDIS:-redis://127.0.0.1:6379}"
for tool in wrk haproxy psql redis-cli; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

# One release build for every figure (a release build takes 8-27 min on
# this machine): echod, the trivial upstream and the two benches, each
# target named so that cargo builds these alone; their paths from cargo's
# JSON messages.
mapfile -t BUILT < <(cargo build --release -q --message-format=json \
    -p echod --bin echod -p echo-gateway --example bench_upstream \
    -p echo-audit-client --bench record -p echo-docs --bench query |
  python3 -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable"):
        print(message["target"]["name"], message["executable"])')
built() { # target name: its executable
  local entry
  for entry in "${BUILT[@]}"; do [ "${entry%% *}" = "$1" ] && { echo "${entry#* }"; return; }; done
  echo "cargo built no $1" >&2; exit 1
}
ECHOD="${ECHOD:-$(built echod)}"
UPSTREAM="$(built bench_upstream)"
WORK="$(mktemp -d)"
DB="echo_scale_bench_$$"
PREFIX="echo:bench:$$:"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}" ${UPSTREAM_PID:-}; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "$REDIS" --scan --pattern "${PREFIX}*" | xargs -r redis-cli -u "$REDIS" del >/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
export ECHO_LOG=warn
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts `echod <args>` pinned to core $1, waits for its `ready` line.
serve() {
  local core="$1"; shift
  local out="$WORK/serve-$RANDOM.out"
  taskset -c "$core" "$ECHOD" "$@" > "$out" 2>>"$WORK/echod.log" &
  PIDS+=($!)
  for _ in $(seq 1 200); do grep -q '^ready ' "$out" 2>/dev/null && return; sleep 0.1; done
  echo "echod $* did not start" >&2; cat "$WORK/echod.log" >&2; exit 1
}
# Waits for these processes only: a bare `wait` would also wait for the
# session rows' upstream, which runs until the end (the Redis row hung so).
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

SECRET="$(head -c 32 /dev/urandom | base64 | tr -d '=+/' | head -c 43)"
cat > "$WORK/grant.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $(printf 'svc-a:%s' "$SECRET" | base64 -w0)"
LUA

# wrk on core 1: "req/s p50 p99 non-2xx".
measure() { # url, wrk args...
  local url="$1"; shift
  local out; out="$(taskset -c 1 timeout $((SECONDS_PER_RUN + 30)) wrk -t1 "-c$CONNECTIONS" \
    "-d${SECONDS_PER_RUN}s" --timeout 5s --latency "$@" "$url")"
  local rps p50 p99 bad
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  bad="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  echo "$rps $p50 $p99 ${bad:-0}"
}
row() { # label, cores, "rps p50 p99 bad"
  local label="$1" cores="$2"; read -r rps p50 p99 bad <<<"$3"
  printf '| %-44s | %5s | %9s | %8.0f | %8s | %8s | %6s |\n' "$label" "$cores" "$rps" \
    "$(python3 -c "print($rps / $cores)")" "$p50" "$p99" "$bad"
}

add_client() { # data dir, extra env...
  echo "$SECRET" | env "${@:2}" "$ECHOD" --data-dir "$1" client add svc-a --secret-stdin \
    --grant client_credentials --audience audit >/dev/null
}

echo "# scale-out figures, $(date -u +%FT%TZ), $(nproc) cores, ${SECONDS_PER_RUN}s per row, $CONNECTIONS connections"
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg) (other builds may share the cores)"
echo
echo "| what | cores | req/s | per core | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|---|---|"

# 1. Token grants: SQLite vs PostgreSQL, one process on core 0.
PORT="$(free_port)"
add_client "$WORK/sqlite"
serve 0 --data-dir "$WORK/sqlite" serve identity --listen "127.0.0.1:$PORT"
row "token grants, identity on SQLite" 1 "$(measure "http://127.0.0.1:$PORT/token" -s "$WORK/grant.lua")"
stop_all
psql "$PG/postgres" -qc "CREATE DATABASE $DB" >/dev/null
add_client "$WORK/pg" ECHO_DATABASE_URL="$PG/$DB"
ECHO_DATABASE_URL="$PG/$DB" serve 0 --data-dir "$WORK/pg" serve identity --listen "127.0.0.1:$PORT"
row "token grants, identity on PostgreSQL" 1 "$(measure "http://127.0.0.1:$PORT/token" -s "$WORK/grant.lua")"
stop_all

# 3. The same on two replicas behind HAProxy (one per core), same database.
P0="$(free_port)"; P1="$(free_port)"; LB="$(free_port)"
cp -r "$WORK/pg" "$WORK/pg1"
ECHO_DATABASE_URL="$PG/$DB" serve 0 --data-dir "$WORK/pg" serve identity --listen "127.0.0.1:$P0" --issuer "http://127.0.0.1:$LB"
ECHO_DATABASE_URL="$PG/$DB" serve 1 --data-dir "$WORK/pg1" serve identity --listen "127.0.0.1:$P1" --issuer "http://127.0.0.1:$LB"
cat > "$WORK/haproxy.cfg" <<CFG
global
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option httpchk GET /readyz
    default-server check inter 250ms fall 2 rise 2
frontend identity
    bind 127.0.0.1:$LB
    default_backend identity
backend identity
    balance roundrobin
    server identity0 127.0.0.1:$P0
    server identity1 127.0.0.1:$P1
CFG
haproxy -db -f "$WORK/haproxy.cfg" >/dev/null 2>&1 &
PIDS+=($!)
sleep 1.5
row "token grants, 2 identity replicas + HAProxy (PG)" 2 "$(measure "http://127.0.0.1:$LB/token" -s "$WORK/grant.lua")"
stop_all

# 2. Session lookups: a session cookie through the gateway to a trivial
# upstream (`echod up`, sessions in SQLite, then in Redis).
UP_PORT="$(free_port)"
taskset -c 0 "$UPSTREAM" "127.0.0.1:$UP_PORT" > "$WORK/upstream.out" &
UPSTREAM_PID=$!
cat > "$WORK/gateway.toml" <<TOML
[rate_limit]
# No limits: one IP sends all the load.

[[routes]]
prefix = "/api/bench"
upstream = "http://127.0.0.1:$UP_PORT"
audience = "bench"
strip_prefix = true
TOML
sessions() { # label, data dir, extra env...
  local label="$1" data="$2"; shift 2
  local id au gw
  id="$(free_port)"; au="$(free_port)"; gw="$(free_port)"
  echo "bench user's password" | "$ECHOD" --data-dir "$data" user add bench --password-stdin >/dev/null
  env "$@" taskset -c 0 "$ECHOD" --data-dir "$data" up --listen "127.0.0.1:$id" --no-worker \
    --audit-listen "127.0.0.1:$au" --gateway-listen "127.0.0.1:$gw" \
    --docs-listen "127.0.0.1:$(free_port)" --parser-listen "127.0.0.1:$(free_port)" \
    --config "$WORK/gateway.toml" > "$data.up" 2>>"$WORK/echod.log" &
  PIDS+=($!)
  for _ in $(seq 1 200); do grep -q '^up ' "$data.up" 2>/dev/null && break; sleep 0.1; done
  grep -q '^up ' "$data.up" || { echo "echod up ($label) did not start" >&2; cat "$WORK/echod.log" >&2; exit 1; }
  local cookie
  cookie="$(python3 - "http://127.0.0.1:$gw" <<'PY'
import html, re, sys, urllib.parse, urllib.request, http.cookiejar
gw = sys.argv[1]
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
form = opener.open(gw + "/login")
action = urllib.parse.urljoin(form.geturl(), "/login")
page = form.read().decode()
fields = {n: html.unescape(v) for n, v in re.findall(r'name="([^"]+)" value="([^"]*)"', page)}
fields.update(username="bench", password="bench user's password")
opener.open(action, urllib.parse.urlencode(fields).encode()).read()
print(next(c.value for c in jar if c.name == "echo_session"))
PY
)"
  row "$label" 1 "$(measure "http://127.0.0.1:$gw/api/bench/x" -H "Cookie: echo_session=$cookie" -H "X-Echo-CSRF: 1")"
  stop_all
}
sessions "session lookups, gateway sessions in SQLite" "$WORK/up-sqlite"
sessions "session lookups, gateway sessions in Redis" "$WORK/up-redis" ECHO_REDIS_URL="$REDIS" ECHO_REDIS_PREFIX="$PREFIX"
kill "$UPSTREAM_PID" 2>/dev/null || true

# 4. The audit writer's record, journal included, on core 0 (its delivery
# task sends to a stand-in answering at once; criterion, 10,000 events an
# iteration).
echo
echo "# audit writer: record per event, write-ahead journal included (core 0)"
taskset -c 0 "$(built record)" --bench audit_writer/record 2>&1 | grep -A2 '^audit_writer/record'

# 5. Search latency, 10,000 documents (30,000 chunks, 20 owners), on each
# backend; the bench on core 0, PostgreSQL's server where it runs.
echo
echo "# docs search: top 5 over 10,000 documents, tantivy vs PostgreSQL (bench on core 0)"
taskset -c 0 "$(built query)" --bench 2>&1 | grep -E 'indexed|search latency|search top 5|time:'
echo
echo "# load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
