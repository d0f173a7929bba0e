#!/usr/bin/env bash
# Compatibility test of `blast mock` with the official `ollama` and `openai` Python clients
# (scripts/mock_clients.py), on a free loopback port. The clients come from PyPI into a
# venv under target/ that later runs reuse. Bounded in time; stops the mock itself.
#
#   bash scripts/test_mock_clients.sh
#   BLAST=target/release/blast bash scripts/test_mock_clients.sh
#
# Exits non-zero if a check fails; the last line is "N passed, M failed".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BLAST="${BLAST:-$ROOT/target/debug/blast}"
VENV="${MOCK_CLIENTS_VENV:-$ROOT/target/mock-clients-venv}"
PY_SYS="${PYTHON:-python3}"

[ -x "$BLAST" ] || cargo build -q
if ! "$VENV/bin/python" -c "import ollama, openai, httpx" 2>/dev/null; then
    timeout 120 "$PY_SYS" -m venv "$VENV"
    timeout 300 "$VENV/bin/pip" install -q --disable-pip-version-check ollama openai httpx
fi

LOG="$(mktemp)"
MOCK_PID=""
cleanup() {
    if [ -n "$MOCK_PID" ]; then
        kill -INT "$MOCK_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$MOCK_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$MOCK_PID" 2>/dev/null || true
        wait "$MOCK_PID" 2>/dev/null || true
    fi
    rm -f "$LOG"
}
trap cleanup EXIT

# Port 0: the mock picks a free port and says which on stderr.
"$BLAST" mock --listen 127.0.0.1:0 --cores 1 --models llama3.2,qwen2.5:0.5b \
    --tokens 5 --token-delay 2ms 2>"$LOG" &
MOCK_PID=$!
URL=""
for _ in $(seq 100); do
    URL="$(grep -o 'http://[0-9.:]*' "$LOG" | head -1 || true)"
    [ -n "$URL" ] && break
    kill -0 "$MOCK_PID" 2>/dev/null || { cat "$LOG"; echo "FAIL: blast mock did not start"; exit 1; }
    sleep 0.1
done
[ -n "$URL" ] || { cat "$LOG"; echo "FAIL: blast mock did not say where it listens"; exit 1; }

timeout 120 "$VENV/bin/python" "$ROOT/scripts/mock_clients.py" "$URL"
