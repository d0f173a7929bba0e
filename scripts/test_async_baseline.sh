#!/usr/bin/env bash
# End-to-end test of scripts/async_baseline.py against scripts/baseline_test_server.py,
# all on 127.0.0.1. Every run is bounded by a request count or a duration and by `timeout`.
#
#   bash scripts/test_async_baseline.sh
#   BASELINE_VENV=/path/to/venv bash scripts/test_async_baseline.sh   # reuse a venv
#
# Exits non-zero if any check fails; the last line is "N passed, M failed".
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASELINE="$HERE/async_baseline.py"
SERVER="$HERE/baseline_test_server.py"
PY_SYS="${PYTHON:-python3}"

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS: $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $1"; }
finish() { echo "$PASSED passed, $FAILED failed"; [ "$FAILED" -eq 0 ]; exit $?; }

# --- venv ------------------------------------------------------------------
VENV="${BASELINE_VENV:-$WORK/venv}"
if [ ! -x "$VENV/bin/python" ]; then
    timeout 120 "$PY_SYS" -m venv "$VENV" || { fail "create venv $VENV"; finish; }
fi
if ! timeout 300 "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"; then
    fail "pip install -r requirements.txt"
    finish
fi
PY="$VENV/bin/python"

# --- test server -------------------------------------------------------------
"$PY_SYS" "$SERVER" > "$WORK/port" 2> "$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
PORT="$(head -n1 "$WORK/port")"
if [ -z "$PORT" ]; then
    fail "test server did not print its port"; cat "$WORK/server.err"; finish
fi
URL="http://127.0.0.1:$PORT"

# Requests the server has answered so far (its own count).
server_count() {
    "$PY_SYS" -c 'import json,sys,urllib.request
print(json.load(urllib.request.urlopen(sys.argv[1] + "/count", timeout=5))["requests"])' "$URL"
}

# check NAME JSON_FILE PYTHON_EXPR: pass when the expression (over d = the JSON) is true.
check() {
    local name="$1" file="$2" expr="$3"
    if "$PY_SYS" - "$file" "$expr" <<'EOF'
import json, sys
path, expr = sys.argv[1], sys.argv[2]
try:
    d = json.load(open(path))
except Exception as exc:
    print(f"  cannot read {path}: {exc}")
    sys.exit(1)
ok = eval(expr, {"d": d})
if not ok:
    print(f"  false: {expr}")
    print("  requests:", d.get("requests"), "errors:", d.get("errors"))
sys.exit(0 if ok else 1)
EOF
    then pass "$name"; else fail "$name"; fi
}

KEYS='all(k in d for k in ("tool","elapsed_s","rps","requests","status","errors","latency_us","client_cpu_us_per_request","config")) and set(d["requests"])=={"sent","completed","ok","failed"} and set(d["errors"])=={"connect","timeout","read","write","parse","closed","other"} and set(d["latency_us"])=={"min","mean","p50","p90","p99","p999","max"}'

# --- 1. exact request count, closed loop ---------------------------------------
before="$(server_count)"
timeout 60 "$PY" "$BASELINE" "$URL/" --requests 200 --concurrent 20 --quiet --json "$WORK/r1.json" > "$WORK/r1.out"
rc=$?
after="$(server_count)"
[ "$rc" -eq 0 ] && pass "200 requests: exit 0" || fail "200 requests: exit $rc"
check "200 requests: all JSON keys" "$WORK/r1.json" "$KEYS and d['tool']=='async-baseline'"
check "200 requests: sent/completed/ok == 200, failed == 0" "$WORK/r1.json" \
    "d['requests']=={'sent':200,'completed':200,'ok':200,'failed':0} and d['status']=={'200':200}"
check "200 requests: latency sane" "$WORK/r1.json" \
    "0 < d['latency_us']['min'] <= d['latency_us']['p50'] <= d['latency_us']['p99'] <= d['latency_us']['max'] and d['client_cpu_us_per_request'] > 0"
if [ -n "$before" ] && [ -n "$after" ] && [ $((after - before)) -eq 200 ]; then
    pass "server counted 200 requests"
else
    fail "server counted $((${after:-0} - ${before:-0})) requests, expected 200"
fi
grep -q "200 ok" "$WORK/r1.out" && pass "human summary on stdout" || fail "human summary on stdout"

# --- 2. closed port: connect errors, exit 1 -------------------------------------
CLOSED="$("$PY_SYS" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
timeout 60 "$PY" "$BASELINE" "http://127.0.0.1:$CLOSED/" --requests 20 --concurrent 5 --quiet --json "$WORK/r2.json" > /dev/null
rc=$?
[ "$rc" -eq 1 ] && pass "closed port: exit 1" || fail "closed port: exit $rc (expected 1)"
check "closed port: connect errors, nothing ok" "$WORK/r2.json" \
    "$KEYS and d['errors']['connect'] > 0 and d['requests']['ok'] == 0 and d['requests']['failed'] == 20"

# --- 3. --duration stops on time ------------------------------------------------
timeout 60 "$PY" "$BASELINE" "$URL/" --duration 1.5 --concurrent 10 --quiet --json "$WORK/r3.json" > /dev/null
rc=$?
[ "$rc" -eq 0 ] && pass "duration: exit 0" || fail "duration: exit $rc"
check "duration 1.5s: elapsed in [1.5, 2.5), requests made" "$WORK/r3.json" \
    "1.5 <= d['elapsed_s'] < 2.5 and d['requests']['ok'] > 0 and d['requests']['sent'] == d['requests']['completed'] + d['requests']['failed']"

# --- 4. paced: --rps 100 --requests 100 takes about a second ---------------------
timeout 60 "$PY" "$BASELINE" "$URL/" --rps 100 --requests 100 --concurrent 10 --quiet --json "$WORK/r4.json" > /dev/null
check "rps 100 x 100 requests: ~1s" "$WORK/r4.json" \
    "d['requests']['ok'] == 100 and 0.9 <= d['elapsed_s'] < 1.8"

# --- 5. streaming LLM APIs: ttft and tokens ---------------------------------------
# The server sends 5 content events per streamed reply.
for api in ollama-generate openai-chat; do
    timeout 60 "$PY" "$BASELINE" "$URL" --api "$api" --stream --requests 20 --concurrent 5 \
        --prompts short,medium,long --quiet --json "$WORK/s-$api.json" > /dev/null
    check "stream $api: ttft and 100 tokens" "$WORK/s-$api.json" \
        "d['requests']['ok'] == 20 and d['ttft_us']['p50'] is not None and 0 < d['ttft_us']['p50'] <= d['latency_us']['max'] and d['tokens'] == {'output': 100, 'per_s': d['tokens']['per_s'], 'source': 'events'}"
done

# --- 6. bad arguments: argparse exit 2 ----------------------------------------------
timeout 60 "$PY" "$BASELINE" "$URL/" --requests 0 > /dev/null 2>&1
rc=$?
[ "$rc" -eq 2 ] && pass "bad argument: exit 2" || fail "bad argument: exit $rc (expected 2)"

finish
