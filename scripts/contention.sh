#!/usr/bin/env bash
# blast under full CPU contention: RUNS consecutive short runs beside `stress-ng --cpu`
# (one busy worker per CPU), alternating a closed loop and an open loop. Each run must end
# within its duration plus 2 s, and the server must have received exactly the requests
# blast reports sent. Nothing in blast kicks or polls to make this true: its runtime blocks
# in epoll until the next event or timer.
#
#   scripts/contention.sh [RUNS (30)] [DURATION_S (1)]
#
# Needs stress-ng (installed from Debian if missing) and python3; builds blast in release
# mode unless $BLAST names a binary. Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail

RUNS="${1:-30}"
DUR="${2:-1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "contention: $*" >&2; }

if ! command -v stress-ng >/dev/null; then
    say "installing stress-ng"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q stress-ng >/dev/null \
        || { timeout 600 apt-get update -q >/dev/null && \
             DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q stress-ng >/dev/null; }
fi
BLAST="${BLAST:-}"
if [ -z "$BLAST" ]; then
    (cd "$ROOT" && cargo build --release -q)
    BLAST="$ROOT/target/release/blast"
fi

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

python3 "$ROOT/scripts/baseline_test_server.py" --port 0 >"$TMP/port" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$TMP/port" ] && break; sleep 0.1; done
[ -s "$TMP/port" ] || { say "the test server did not start"; exit 1; }
URL="http://127.0.0.1:$(head -n 1 "$TMP/port")"

count() {
    python3 -c 'import json, sys, urllib.request
print(json.load(urllib.request.urlopen(sys.argv[1] + "/count", timeout=10))["requests"])' "$URL"
}

# Bounded like everything else: the busy workers stop on their own after the longest the
# runs could take.
stress-ng --cpu "$(nproc)" --timeout "$((RUNS * (DUR + 4) + 30))s" --quiet &
PIDS+=($!)
sleep 1

fail=0
for i in $(seq "$RUNS"); do
    if [ $((i % 2)) -eq 0 ]; then mode=(--rate 300); else mode=(); fi
    rm -f "$TMP/run.json"
    before="$(count)"
    t0="$(date +%s.%N)"
    rc=0
    timeout "$((DUR + 30))" "$BLAST" --conns 10 --duration "${DUR}s" -q "${mode[@]}" \
        --json "$TMP/run.json" "$URL/" >/dev/null 2>"$TMP/err" || rc=$?
    t1="$(date +%s.%N)"
    after="$(count)"
    verdict="$(python3 - "$TMP/run.json" "$before" "$after" "$t0" "$t1" "$DUR" "$rc" <<'PY'
import json, sys
path, before, after, t0, t1, dur, rc = sys.argv[1:]
wall = float(t1) - float(t0)
try:
    sent = json.load(open(path))["requests"]["sent"]
except Exception as e:
    print(f"FAIL no result ({e}), exit {rc}")
    sys.exit()
got = int(after) - int(before)
ok = rc in ("0",) and wall <= float(dur) + 2 and got == sent
print(f"{'ok  ' if ok else 'FAIL'} wall {wall:.2f} s, blast sent {sent}, server got {got}, exit {rc}")
PY
)"
    echo "run $i ${mode[*]:-closed loop}: $verdict"
    case "$verdict" in FAIL*) fail=$((fail + 1)); cat "$TMP/err" >&2 ;; esac
done
echo "$((RUNS - fail)) passed, $fail failed"
[ "$fail" -eq 0 ]
