#!/usr/bin/env bash
# Gateway benchmark (issue 5): a trivial upstream called directly, and through the
# gateway with a bearer token and with a session cookie, at concurrency 8 and 64.
# The platform (`echod up`) and the upstream share core 0; wrk runs on core 1.
# Needs wrk (apt-get install wrk) and python3. Usage: bench/gateway.sh [seconds]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_RUN="${1:-10}"
command -v wrk >/dev/null || { echo "needs wrk: apt-get install wrk"; exit 1; }

cargo build --release -q -p echod -p echo-gateway --example bench_upstream
ECHOD=target/release/echod
UPSTREAM=target/release/examples/bench_upstream
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT="$(free_port)"; ID_PORT="$(free_port)"; AU_PORT="$(free_port)"; GW_PORT="$(free_port)"
taskset -c 0 "$UPSTREAM" "127.0.0.1:$UP_PORT" > "$WORK/upstream.out" &
PIDS+=($!)

cat > "$WORK/gateway.toml" <<TOML
[rate_limit]
# No limits: one IP sends all the load.

[[routes]]
prefix = "/api/bench"
upstream = "http://127.0.0.1:$UP_PORT"
audience = "bench"
strip_prefix = true
TOML

export ECHO_LOG=warn
echo "bench user's password" | "$ECHOD" --data-dir "$WORK/data" user add bench --password-stdin >/dev/null
CLIENT_SECRET="$(head -c 32 /dev/urandom | base64 | tr -d '=+/' | head -c 43)"
echo "$CLIENT_SECRET" | "$ECHOD" --data-dir "$WORK/data" client add bench-cli --secret-stdin \
  --grant client_credentials --audience gateway >/dev/null
taskset -c 0 "$ECHOD" --data-dir "$WORK/data" up --listen "127.0.0.1:$ID_PORT" \
  --audit-listen "127.0.0.1:$AU_PORT" --gateway-listen "127.0.0.1:$GW_PORT" \
  --config "$WORK/gateway.toml" > "$WORK/up.out" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q '^up ' "$WORK/up.out" 2>/dev/null && break; sleep 0.1; done
GW="http://127.0.0.1:$GW_PORT"

TOKEN="$(curl -sf -u "bench-cli:$CLIENT_SECRET" -d grant_type=client_credentials -d audience=gateway \
  "http://127.0.0.1:$ID_PORT/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

# A browser login with a cookie jar: /login → identity's form → /callback.
COOKIE="$(python3 - "$GW" <<'PY'
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
)"

run() { # label, url, header...
  local label="$1" url="$2"; shift 2
  for c in 8 64; do
    local args=(-t1 "-c$c" "-d${SECONDS_PER_RUN}s" --latency)
    for h in "$@"; do args+=(-H "$h"); done
    local out; out="$(taskset -c 1 wrk "${args[@]}" "$url")"
    local rps p50 p99
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
    p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
    printf '| %-22s | %3s | %10s | %8s | %8s |\n' "$label" "$c" "$rps" "$p50" "$p99"
  done
}

echo "| path | conc. | req/s | p50 | p99 |"
echo "|---|---|---|---|---|"
run "direct" "http://127.0.0.1:$UP_PORT/x"
run "gateway, bearer token" "$GW/api/bench/x" "Authorization: Bearer $TOKEN"
run "gateway, session cookie" "$GW/api/bench/x" "Cookie: echo_session=$COOKIE" "X-Echo-CSRF: 1"
