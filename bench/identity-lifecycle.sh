#!/usr/bin/env bash
# Token lifecycle side by side (issue 4): the refresh-token grant and
# introspection, for `echod serve identity` and then the peer provider
# (../shared/peer, panva oidc-provider), each server pinned to core 0, wrk with
# one thread on core 1, CONNS connections, WARMUP s unmeasured then DURATION s
# measured per row. Every wrk run is bounded (-d, --timeout 5s, `timeout`).
#
#   bench/identity-lifecycle.sh                    # results in bench/out/<time>-lifecycle/
#   DURATION=20 POOL_ECHO=80000 bench/identity-lifecycle.sh
#
# Refresh: each request presents a distinct refresh token that was never used.
# bench/refresh_pool.py makes the pool beforehand through each provider's real
# HTTP flow (one password login through its login form, then
# authorization-code + PKCE requests on that SSO session, each code exchanged
# with client_secret_basic for a new refresh token). bench/wrk/refresh.lua
# hands out one pool token per request; should the pool run out, it goes on
# with the rotated successors from earlier answers (each also used once), and
# the summary says how many requests used which.
#
# Introspection: POST /introspect (the peer: its discovery's
# introspection_endpoint), client_secret_basic as the service client `svc-a`
# (a resource server), token = a user's access token from the same flow; the
# answer is checked to be `"active":true` before measuring and after.
#
# The peer's pool is made with prompt=consent: oidc-provider grants
# offline_access only then, and without it its refresh tokens are bound to the
# SSO session. With it both providers' tokens are offline_access grants.
set -euo pipefail
DURATION="${DURATION:-10}"
OUT_SUFFIX="-lifecycle"
# ROOT, PEER, OUT, PORT, ECHOD, DATA, SECRET (client svc-a), start, stop
source "$(dirname "${BASH_SOURCE[0]}")/identity-common.sh"

CONNS="${CONNS:-64}"
WARMUP="${WARMUP:-3}"
POOL_ECHO="${POOL_ECHO:-50000}"   # refresh-fresh pool (0: no refresh-fresh run)
SEED="${SEED:-160}"               # tokens that start each warm-up (> CONNS)
PEER_PORT="${PEER_PORT:-4000}"
REDIRECT="http://127.0.0.1:4999/callback"   # never contacted: the code is read from Location
COMMON_LUA="$PEER/load/wrk/request.lua"
REFRESH_LUA="$ROOT/bench/wrk/refresh.lua"
HZ="$(getconf CLK_TCK)"
(( DURATION > 0 && DURATION <= 120 )) || { echo "DURATION must be 1..120 s" >&2; exit 2; }
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }

PEER_PID=""
cleanup_extra() { if [[ -n "$PEER_PID" ]]; then kill "$PEER_PID" 2>/dev/null || true; wait "$PEER_PID" 2>/dev/null || true; fi; }

# Echo: a user and a confidential web client allowed refresh tokens.
WEB_SECRET="$(head -c 32 /dev/urandom | base64 | tr -d '=+/' | head -c 43)"
echo "$WEB_SECRET" | "$ECHOD" --data-dir "$DATA" client add web --secret-stdin \
  --redirect-uri "$REDIRECT" --grant authorization_code --grant refresh_token >/dev/null
echo "correct horse" | "$ECHOD" --data-dir "$DATA" user add alice --password-stdin >/dev/null

basic() { printf 'Basic %s' "$(printf '%s:%s' "$1" "$2" | base64 -w0)"; }  # ids and secrets here are URL-safe
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wrk_run SECONDS URL LUA JSON [VAR=value…]: one bounded wrk run on core 1.
wrk_run() {
  local secs="$1" url="$2" lua="$3" json="$4"; shift 4
  env "$@" WRK_COMMON="$COMMON_LUA" WRK_JSON="$json" timeout $(( secs + 30 )) taskset -c 1 \
    wrk -t1 -c"$CONNS" -d"${secs}s" --timeout 5s --latency -s "$lua" "$url"
}

# measure WHO SCENARIO SERVER_PID URL LUA: a warm-up with the environment in
# WARM_ENV (unmeasured; nothing when WARMUP=0), then the measured run with RUN_ENV.
measure() {
  local who="$1" scenario="$2" spid="$3" url="$4" lua="$5"
  local base="$OUT/$who-$scenario" t0 t1 s e load
  if (( WARMUP > 0 )); then
    wrk_run "$WARMUP" "$url" "$lua" "" "${WARM_ENV[@]}" > "$base.warmup.txt"
    if grep -q 'Non-2xx' "$base.warmup.txt"; then echo "$who $scenario warm-up: $(grep 'Non-2xx' "$base.warmup.txt")" >&2; fi
  fi
  load="$(uptime)"; echo "$who $scenario: $load" | tee -a "$OUT/conditions.txt"
  t0="$(ticks "$spid")"; s="$(date +%s%N)"
  TIMEFORMAT='%U %S'
  { time wrk_run "$DURATION" "$url" "$lua" "$base.json" "${RUN_ENV[@]}" > "$base.txt"; } 2> "$base.time"
  e="$(date +%s%N)"; t1="$(ticks "$spid")"
  python3 - "$base" "$who" "$scenario" "$t0" "$t1" "$HZ" "$s" "$e" "$load" <<'PY'
import json, os, sys
base, who, scenario, t0, t1, hz, s, e, load = sys.argv[1:]
d = json.load(open(base + ".json"))
wall = (int(e) - int(s)) / 1e9
u, sy = open(base + ".time").read().split()[-2:]
d.update(who=who, scenario=scenario, rps=d["requests"] / (d["duration_us"] / 1e6),
         server_cpu_core_pct=round(100 * (int(t1) - int(t0)) / int(hz) / wall, 1),
         wrk_cpu_core_pct=round(100 * (float(u) + float(sy)) / wall, 1), uptime=load.strip())
if os.path.exists(base + ".json.tokens"):
    d["tokens"] = json.load(open(base + ".json.tokens"))
json.dump(d, open(base + ".json", "w"))
l, err = d["latency_us"], d["errors"]
print(f"{who:5s} {scenario:10s} {d['rps']:8.0f} req/s  p50 {l['p50']/1000:6.2f} ms  p99 {l['p99']/1000:6.2f} ms  "
      f"non-2xx {err['status']}  other errors {err['connect']+err['read']+err['write']+err['timeout']}  "
      f"cpu server {d['server_cpu_core_pct']}% wrk {d['wrk_cpu_core_pct']}%  tokens {d.get('tokens', '-')}")
PY
}

# lifecycle WHO ISSUER SERVER_PID POOL WEB_ID WEB_SECRET SVC_ID SVC_SECRET [PROMPT]
# Refresh is measured two ways:
#  refresh-chain  (both): SEED never-used tokens start the warm-up, which goes
#                 on with their successors; the measured run starts from the
#                 warm-up's unused successors and goes on with theirs. 64
#                 token families, every token still presented exactly once.
#                 The only way for the peer: its in-memory adapter is an LRU of
#                 1,000 entries, so a big pool made beforehand is evicted.
#  refresh-fresh  (POOL > 0): POOL tokens from as many code exchanges, each
#                 presented once (a warm-up with SEED others first).
lifecycle() {
  local who="$1" issuer="$2" spid="$3" pool="$4" web_id="$5" web_secret="$6" svc_id="$7" svc_secret="$8" prompt="${9:-}"
  local meta token_ep introspect_ep at probe auth
  meta="$(curl -fsS --max-time 5 "$issuer/.well-known/openid-configuration")"
  token_ep="$(python3 -c 'import json,sys;print(json.load(sys.stdin)["token_endpoint"])' <<<"$meta")"
  introspect_ep="$(python3 -c 'import json,sys;print(json.load(sys.stdin)["introspection_endpoint"])' <<<"$meta")"
  auth="$(basic "$web_id" "$web_secret")"

  # pool file, oldest first: [fresh warm-up SEED][fresh POOL][chain SEED][probe]
  local fresh_n=$(( pool > 0 ? SEED + pool : 0 ))
  echo "$who pool: $(uptime)" | tee -a "$OUT/conditions.txt"
  taskset -c 1 timeout 900 python3 "$ROOT/bench/refresh_pool.py" --issuer "$issuer" \
    --client-id "$web_id" --client-secret "$web_secret" --redirect-uri "$REDIRECT" \
    --username alice --password "correct horse" --prompt "$prompt" -n $(( fresh_n + SEED + 1 )) --max-seconds 840 \
    --out "$OUT/$who-pool.all" --access-token-out "$OUT/$who-access-token.txt" 2>&1 | tee -a "$OUT/conditions.txt"
  (( pool > 0 )) && sed -n "1,${SEED}p" "$OUT/$who-pool.all" > "$OUT/$who-fresh.warm"
  (( pool > 0 )) && sed -n "$(( SEED + 1 )),${fresh_n}p" "$OUT/$who-pool.all" > "$OUT/$who-fresh.pool"
  sed -n "$(( fresh_n + 1 )),$(( fresh_n + SEED ))p" "$OUT/$who-pool.all" > "$OUT/$who-chain.seed"
  tail -n 1 "$OUT/$who-pool.all" > "$OUT/$who-pool.probe"
  rm "$OUT/$who-pool.all"

  # probes: one refresh and one introspection must succeed before measuring
  probe="$(curl -sS --max-time 5 -H "Authorization: $(basic "$web_id" "$web_secret")" \
    --data "grant_type=refresh_token&refresh_token=$(cat "$OUT/$who-pool.probe")" "$token_ep")"
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert "refresh_token" in d and "access_token" in d, d' "$probe" \
    || { echo "$who: refresh probe failed: $probe" >&2; exit 1; }
  at="$(cat "$OUT/$who-access-token.txt")"
  probe="$(curl -sS --max-time 5 -H "Authorization: $(basic "$svc_id" "$svc_secret")" --data "token=$at" "$introspect_ep")"
  echo "$probe" > "$OUT/$who-introspection-answer.json"
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d.get("active") is True, d' "$probe" \
    || { echo "$who: introspection probe not active: $probe" >&2; exit 1; }
  echo "$who introspection answer: $probe"

  # introspection first: it writes nothing, so the peer's LRU keeps the seeds
  WARM_ENV=(WRK_METHOD=POST WRK_BODY="token=$at" WRK_AUTH="$(basic "$svc_id" "$svc_secret")")
  RUN_ENV=("${WARM_ENV[@]}")
  measure "$who" introspect "$spid" "$introspect_ep" "$COMMON_LUA"
  # the access token must still be active after the load
  probe="$(curl -sS --max-time 5 -H "Authorization: $(basic "$svc_id" "$svc_secret")" --data "token=$at" "$introspect_ep")"
  python3 -c 'import json,sys; assert json.loads(sys.argv[1]).get("active") is True' "$probe" \
    || { echo "$who: introspection after load not active: $probe" >&2; exit 1; }

  if (( pool > 0 )); then
    WARM_ENV=(WRK_AUTH="$auth" WRK_POOL="$OUT/$who-fresh.warm")
    RUN_ENV=(WRK_AUTH="$auth" WRK_POOL="$OUT/$who-fresh.pool")
    measure "$who" refresh-fresh "$spid" "$token_ep" "$REFRESH_LUA"
  fi
  WARM_ENV=(WRK_AUTH="$auth" WRK_POOL="$OUT/$who-chain.seed" WRK_LEFTOVER="$OUT/$who-chain.pool")
  RUN_ENV=(WRK_AUTH="$auth" WRK_POOL="$OUT/$who-chain.pool")
  (( WARMUP > 0 )) || cp "$OUT/$who-chain.seed" "$OUT/$who-chain.pool"
  measure "$who" refresh-chain "$spid" "$token_ep" "$REFRESH_LUA"
  rm -f "$OUT/$who"-fresh.* "$OUT/$who"-chain.* "$OUT/$who-pool.probe" "$OUT/$who-access-token.txt"  # live credentials
}

{
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ) nproc=$(nproc) cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
  echo "echod=$("$ECHOD" --version) wrk=$(wrk --version 2>&1 | head -1 | awk '{print $2}') node=$(node --version)"
  echo "conns=$CONNS warmup_s=$WARMUP duration_s=$DURATION pool_echo=$POOL_ECHO seed=$SEED"
} | tee "$OUT/conditions.txt"

start
# Introspection as the token's own client: since issue 14 §7 echod tells only a
# token's parties (its client, a resource server in its aud) that it is active.
lifecycle echod "http://127.0.0.1:$PORT" "$PID" "$POOL_ECHO" web "$WEB_SECRET" web "$WEB_SECRET"
echo "echod reuse_detected audit events: $(grep -c 'oauth.refresh.reuse_detected' "$OUT/echod.log" || true)" | tee -a "$OUT/conditions.txt"
stop; PID=""

# The peer as its README starts it (peer/start.sh, PIN_CORE=0), production mode, quiet.
(cd "$PEER/peer" && exec env NODE_ENV=production QUIET=1 PORT="$PEER_PORT" PIN_CORE=0 ./start.sh) > "$OUT/peer.log" 2>&1 &
PEER_PID=$!
for _ in $(seq 1 60); do curl -fsS --max-time 2 "http://127.0.0.1:$PEER_PORT/.well-known/openid-configuration" >/dev/null 2>&1 && break; sleep 0.5; done
taskset -a -p -c 0 "$PEER_PID" >/dev/null
lifecycle peer "http://127.0.0.1:$PEER_PORT" "$PEER_PID" 0 \
  harness-web harness-web-secret-0123456789abcdef svc-a svc-a-secret-0123456789abcdef consent
cleanup_extra; PEER_PID=""

python3 - "$OUT" "$CONNS" <<'PY' | tee "$OUT/results.md"
import glob, json, os, sys
out, conns = sys.argv[1:]
r = {(d["who"], d["scenario"]): d for d in (json.load(open(p)) for p in glob.glob(os.path.join(out, "*.json")))
     if "who" in d}
targets = {"refresh-fresh": 3000, "refresh-chain": 3000, "introspect": 30000}
lat = lambda d: f"{d['latency_us']['p50']/1000:.2f} / {d['latency_us']['p99']/1000:.2f}"
print("| scenario | conns | echod req/s | echod p50 / p99 ms | peer req/s | peer p50 / p99 ms | echod ÷ peer | target (req/s, ≥ 5× peer) met |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
bad = 0
for sc in ("refresh-fresh", "refresh-chain", "introspect"):
    e, p = r.get(("echod", sc)), r.get(("peer", sc))
    if not e: continue
    for d in filter(None, (e, p)):
        bad += d["errors"]["status"] + d.get("tokens", {}).get("exhausted", 0)
    ratio = e["rps"] / p["rps"] if p else None
    met = "yes" if e["rps"] >= targets[sc] and (ratio is None or ratio >= 5) else "no"
    print(f"| {sc} | {conns} | {e['rps']:,.0f} | {lat(e)} | " + (f"{p['rps']:,.0f} | {lat(p)} | {ratio:.1f}× |" if p else "— | — | — |")
          + f" {met} (≥ {targets[sc]:,}) |")
print()
for (who, sc), d in sorted(r.items()):
    e = d["errors"]
    print(f"- {who} {sc}: {d['requests']} requests, non-2xx {e['status']}, socket errors {e['connect']+e['read']+e['write']+e['timeout']}, "
          f"server CPU {d['server_cpu_core_pct']} % of a core, wrk {d['wrk_cpu_core_pct']} %"
          + (f", refresh tokens: {d['tokens']['from_pool']} from the pool of {d['tokens']['pool_size']}, {d['tokens']['from_successor']} successors"
             if "tokens" in d else "") + f"; before: {d['uptime']}")
if bad:
    print(f"\nWARNING: {bad} non-2xx answers or exhausted pools: figures not valid")
PY
echo "# results in $OUT"
