#!/usr/bin/env bash
# Gateway benchmark (issues 5 and 18): a trivial upstream called directly, through nginx
# (a plain reverse proxy: the reference), and through the gateway with a bearer token and
# with a session cookie, at concurrency 8 and 64; the gateway both as `echod up` runs it
# (identity, audit and gateway in one process) and as `echod serve gateway` alone.
# The upstream and the proxy under test share core 0; wrk runs with one thread on core 1.
# Each row runs after a 2 s warm-up. Release build. Besides wrk's figures, each proxy's row
# reports its resident memory (the peak sampled during the row) and the CPU time it spent
# per request (user + system, from /proc): on a machine whose other work disturbs the
# wall-clock figures, that is the proxy's own cost.
# Needs wrk, curl and python3; installs nginx-light when nginx is missing.
# Usage: bench/gateway.sh [seconds per row]
# With BUILT=<dir>, the release binaries `echod` and `bench_upstream` are taken from <dir>
# instead of being built (to measure another commit's build beside this one's).
# With PERF_DIR=<dir>, each proxy's 64-connection row is also recorded by `perf record -g`
# into <dir>/<row>.data (read it with `perf report -i <dir>/<row>.data --no-children`).
# With CALLGRIND=1, a second table counts each proxy's user-space instructions per request
# under valgrind's callgrind (nginx's one process, `echod serve gateway`), which unlike the
# timings does not change with what else the machine runs; the profiles stay in
# CALLGRIND_DIR (default: a temporary directory) for `callgrind_annotate`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_RUN="${1:-10}"
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk"; exit 1; }
if ! command -v nginx >/dev/null; then
  apt-get install -y -q nginx-light >/dev/null || { echo "needs nginx: apt-get install nginx-light"; exit 1; }
fi
NGINX="$(command -v nginx)"

if [[ -n "${BUILT:-}" ]]; then
  # Binaries built earlier (another commit's, to compare builds side by side in one run).
  ECHOD="$BUILT/echod"; UPSTREAM="$BUILT/bench_upstream"
else
  cargo build --release -q -p echod --bin echod
  cargo build --release -q -p echo-gateway --example bench_upstream
  TARGET="${CARGO_TARGET_DIR:-target}"
  ECHOD="$TARGET/release/echod"
  UPSTREAM="$TARGET/release/examples/bench_upstream"
fi
WORK="$(mktemp -d)"
chmod 755 "$WORK" # nginx's worker runs as another user
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # file, pattern
  for _ in $(seq 1 150); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "no '$2' in $1:"; cat "$1"; exit 1
}
UP_PORT="$(free_port)"; NGX_PORT="$(free_port)"; ID_PORT="$(free_port)"; AU_PORT="$(free_port)"
GW_PORT="$(free_port)"; SOLO_PORT="$(free_port)"; VG_NGX_PORT="$(free_port)"; VG_GW_PORT="$(free_port)"

taskset -c 0 "$UPSTREAM" "127.0.0.1:$UP_PORT" > "$WORK/upstream.out" &
PIDS+=($!)

# nginx as a plain reverse proxy: one worker, keep-alive to the upstream, no access log,
# the same prefix stripped as the gateway's route.
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream bench { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGX_PORT;
    location /api/bench/ {
      proxy_pass http://bench/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
taskset -c 0 "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx.conf" &
PIDS+=($!)

cat > "$WORK/gateway.toml" <<TOML
# Every limit on and counted, none reached: one IP and one user send all the load.
[rate_limit]
per_ip = { per_second = 1000000.0, burst = 1000000 }
per_user = { per_second = 1000000.0, burst = 1000000 }

[[routes]]
prefix = "/api/bench"
upstream = "http://127.0.0.1:$UP_PORT"
audience = "bench"
strip_prefix = true
rate_limit = { per_second = 1000000.0, burst = 1000000 }
TOML

export ECHO_LOG=warn
DATA="$WORK/data"
echo "bench user's password" | "$ECHOD" --data-dir "$DATA" user add bench --password-stdin >/dev/null
secret() { head -c 32 /dev/urandom | base64 | tr -d '=+/' | head -c 43; }
CLIENT_SECRET="$(secret)"
echo "$CLIENT_SECRET" | "$ECHOD" --data-dir "$DATA" client add bench-cli --secret-stdin \
  --grant client_credentials --audience gateway >/dev/null
# The gateway's registration, made here so that it names every gateway's address (`up`
# keeps a registration it finds, adding what it lacks).
export ECHO_GATEWAY_CLIENT_SECRET; ECHO_GATEWAY_CLIENT_SECRET="$(secret)"
gateway_uris=()
for port in "$GW_PORT" "$SOLO_PORT" "$VG_GW_PORT"; do
  gateway_uris+=(--redirect-uri "http://127.0.0.1:$port/callback"
    --post-logout-redirect-uri "http://127.0.0.1:$port/signed-out")
done
echo "$ECHO_GATEWAY_CLIENT_SECRET" | "$ECHOD" --data-dir "$DATA" client add gateway --secret-stdin \
  "${gateway_uris[@]}" --grant authorization_code --grant refresh_token \
  --grant client_credentials --grant token_exchange --audience gateway --audience audit \
  --audience bench --scope openid --scope profile --scope offline_access --scope audit.read >/dev/null

taskset -c 0 "$ECHOD" --data-dir "$DATA" up --listen "127.0.0.1:$ID_PORT" \
  --audit-listen "127.0.0.1:$AU_PORT" --gateway-listen "127.0.0.1:$GW_PORT" \
  --config "$WORK/gateway.toml" > "$WORK/up.out" &
UP_PID=$!
PIDS+=("$UP_PID")
wait_for "$WORK/up.out" '^up '
for _ in $(seq 1 50); do [[ -s "$WORK/nginx.pid" ]] && break; sleep 0.1; done

# The gateway alone, in front of the identity of `up`, with its own data directory.
taskset -c 0 "$ECHOD" --data-dir "$WORK/solo" serve gateway --listen "127.0.0.1:$SOLO_PORT" \
  --issuer "http://127.0.0.1:$ID_PORT" --config "$WORK/gateway.toml" > "$WORK/solo.out" &
SOLO_PID=$!
PIDS+=("$SOLO_PID")
wait_for "$WORK/solo.out" '^ready '

TOKEN="$(curl -sf -u "bench-cli:$CLIENT_SECRET" -d grant_type=client_credentials -d audience=gateway \
  "http://127.0.0.1:$ID_PORT/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

# A browser login with a cookie jar: /login → identity's form → /callback.
login() { # gateway URL → the session cookie's value
  python3 - "$1" <<'PY'
import html, re, sys, urllib.parse, urllib.request, http.cookiejar
gw = sys.argv[1]
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
form = opener.open(gw + "/login")  # redirected to identity's login form
action = urllib.parse.urljoin(form.geturl(), "/login")
page = form.read().decode()
fields = {n: html.unescape(v) for n, v in re.findall(r'name="([^"]+)" value="([^"]*)"', page)}
fields.update(username="bench", password="bench user's password")
opener.open(action, urllib.parse.urlencode(fields).encode()).read()
print(next(c.value for c in jar if c.name == "echo_session"))
PY
}
UP_COOKIE="$(login "http://127.0.0.1:$GW_PORT")"
SOLO_COOKIE="$(login "http://127.0.0.1:$SOLO_PORT")"

# wrk's latencies (`36.00us`, `1.20ms`, `2.00s`) in microseconds.
micros() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else print n * 1000000 }'; }
rss_mb() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
# CPU time (user + system) a process has used, in clock ticks.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

declare -A NGINX_RPS; DIRECT_P50=""
# label, pid whose resident memory is reported ("-": none), url, header…
run() {
  local label="$1" pid="$2" url="$3"; shift 3
  for c in 8 64; do
    local args=(-t1 "-c$c" --latency)
    for h in "$@"; do args+=(-H "$h"); done
    taskset -c 1 wrk "${args[@]}" -d2s "$url" >/dev/null # warm-up
    local rss=0 sampler=""; echo 0 > "$WORK/rss"
    if [[ "$pid" != - ]]; then
      ( peak=0; while sleep 0.5; do now="$(rss_mb "$pid")"; (( now > peak )) && peak=$now; echo "$peak" > "$WORK/rss"; done ) &
      sampler=$!
    fi
    local perf=""
    if [[ -n "${PERF_DIR:-}" && "$pid" != - && $c == 64 ]]; then
      mkdir -p "$PERF_DIR"
      perf record -q -F 999 -g -p "$pid" -o "$PERF_DIR/${label//[^a-z]/_}.data" -- sleep "$SECONDS_PER_RUN" 2>/dev/null &
      perf=$!
    fi
    local ticks=0; [[ "$pid" != - ]] && ticks="$(cpu_ticks "$pid")"
    local out; out="$(taskset -c 1 wrk "${args[@]}" "-d${SECONDS_PER_RUN}s" "$url")"
    [[ "$pid" != - ]] && ticks=$(( $(cpu_ticks "$pid") - ticks ))
    [[ -n "$perf" ]] && wait "$perf"
    if [[ -n "$sampler" ]]; then kill "$sampler"; wait "$sampler" 2>/dev/null || true; rss="$(cat "$WORK/rss")"; fi
    local rps p50 p99 bad p50us added share requests cpu
    rps="$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")"
    requests="$(awk '/requests in/ {print $1}' <<<"$out")"
    cpu="-"; [[ "$pid" != - ]] && cpu="$(awk -v t="$ticks" -v u="$TICK_US" -v n="$requests" 'BEGIN { printf "%.1f µs", t * u / n }')"
    p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
    p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
    bad="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"; bad="${bad:-0}"
    if grep -q 'Socket errors' <<<"$out"; then bad="$bad ($(grep 'Socket errors' <<<"$out" | sed 's/^ *//'))"; fi
    p50us="$(micros "$p50")"
    [[ "$label" == direct && $c == 8 ]] && DIRECT_P50="$p50us"
    [[ "$label" == nginx* ]] && NGINX_RPS[$c]="$rps"
    added="-"; [[ -n "$DIRECT_P50" && "$label" != direct ]] && added="$(awk -v a="$p50us" -v b="$DIRECT_P50" 'BEGIN { printf "%.0f µs", a - b }')"
    share="-"; [[ -n "${NGINX_RPS[$c]:-}" && "$label" != direct ]] && share="$(awk -v a="$rps" -v b="${NGINX_RPS[$c]}" 'BEGIN { printf "%.0f %%", 100 * a / b }')"
    [[ "$pid" == - ]] && rss="-" || rss="$rss MB"
    printf '| %-29s | %3s | %8s | %6s | %8s | %8s | %8s | %s | %s | %s |\n' \
      "$label" "$c" "$rps" "$share" "$p50" "$added" "$p99" "$bad" "$rss" "$cpu"
  done
}

# nginx's one worker does the proxying (its master only watches).
NGINX_WORKER="$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)"
echo "| path | conc. | req/s | of nginx | p50 | added p50 | p99 | non-2xx | RSS | CPU per request |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
run "direct" - "http://127.0.0.1:$UP_PORT/x"
run "nginx (plain proxy)" "$NGINX_WORKER" "http://127.0.0.1:$NGX_PORT/api/bench/x"
run "up: bearer token" "$UP_PID" "http://127.0.0.1:$GW_PORT/api/bench/x" "Authorization: Bearer $TOKEN"
run "up: session cookie" "$UP_PID" "http://127.0.0.1:$GW_PORT/api/bench/x" \
  "Cookie: echo_session=$UP_COOKIE" "X-Echo-CSRF: 1"
run "serve gateway: bearer token" "$SOLO_PID" "http://127.0.0.1:$SOLO_PORT/api/bench/x" \
  "Authorization: Bearer $TOKEN"
run "serve gateway: session cookie" "$SOLO_PID" "http://127.0.0.1:$SOLO_PORT/api/bench/x" \
  "Cookie: echo_session=$SOLO_COOKIE" "X-Echo-CSRF: 1"

[[ -n "${CALLGRIND:-}" ]] || exit 0

# User-space instructions per request: each proxy under callgrind, counting only while the
# measured load runs (after a warm-up), divided by the requests wrk completed meanwhile.
command -v valgrind >/dev/null || apt-get install -y -q valgrind >/dev/null
CG_DIR="${CALLGRIND_DIR:-$WORK/callgrind}"; mkdir -p "$CG_DIR"
sed -e "s/^worker_processes 1;/worker_processes 1;\nmaster_process off;/" \
  -e "s/listen 127.0.0.1:$NGX_PORT;/listen 127.0.0.1:$VG_NGX_PORT;/" \
  -e "s#pid $WORK/nginx.pid;#pid $WORK/nginx-vg.pid;#" "$WORK/nginx.conf" > "$WORK/nginx-vg.conf"
taskset -c 0 valgrind -q --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$CG_DIR/nginx.%p" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx-vg.conf" &
PIDS+=($!)
taskset -c 0 valgrind -q --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$CG_DIR/gateway.%p" "$ECHOD" --data-dir "$WORK/vg" serve gateway --listen "127.0.0.1:$VG_GW_PORT" \
  --issuer "http://127.0.0.1:$ID_PORT" --config "$WORK/gateway.toml" > "$WORK/vg.out" &
PIDS+=($!)
for _ in $(seq 1 600); do grep -q '^ready ' "$WORK/vg.out" 2>/dev/null && break; sleep 0.1; done
wait_for "$WORK/vg.out" '^ready '
VG_COOKIE="$(login "http://127.0.0.1:$VG_GW_PORT")"
# The process (valgrind's, which is its guest's) that listens on `port`.
listener_pid() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }

counted() { # label, port, url, header…
  local label="$1" pid; pid="$(listener_pid "$2")"; local url="$3"; shift 3
  local args=(-t1 -c8)
  for h in "$@"; do args+=(-H "$h"); done
  taskset -c 1 wrk "${args[@]}" -d3s "$url" >/dev/null # warm-up
  callgrind_control -z "$pid" >/dev/null; callgrind_control -i on "$pid" >/dev/null
  local out; out="$(taskset -c 1 wrk "${args[@]}" "-d${SECONDS_PER_RUN}s" "$url")"
  callgrind_control -i off "$pid" >/dev/null; callgrind_control -d "$pid" >/dev/null
  local requests bad file ir
  requests="$(awk '/requests in/ {print $1}' <<<"$out")"
  bad="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"; bad="${bad:-0}"
  file="$(ls -t "$CG_DIR"/*."$pid".* | head -1)"
  ir="$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')"
  printf '| %-29s | %8s | %s | %12s | %8s |\n' "$label" "$requests" "$bad" "$ir" \
    "$(awk -v i="$ir" -v n="$requests" 'BEGIN { printf "%.0f", i / n }')"
}
echo
echo "| proxy under callgrind (8 connections) | requests | non-2xx | instructions | per request |"
echo "|---|---:|---:|---:|---:|"
counted "nginx (plain proxy)" "$VG_NGX_PORT" "http://127.0.0.1:$VG_NGX_PORT/api/bench/x"
counted "serve gateway: bearer token" "$VG_GW_PORT" "http://127.0.0.1:$VG_GW_PORT/api/bench/x" \
  "Authorization: Bearer $TOKEN"
counted "serve gateway: session cookie" "$VG_GW_PORT" "http://127.0.0.1:$VG_GW_PORT/api/bench/x" \
  "Cookie: echo_session=$VG_COOKIE" "X-Echo-CSRF: 1"
