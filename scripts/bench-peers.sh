#!/usr/bin/env bash
# blast against its peers (wrk, oha, h2load, the async baseline) on a local nginx.
#
#   scripts/bench-peers.sh [--quick] [--rounds N] [--out FILE] [--no-build] [-- BENCH_PEERS_OPTIONS]
#
#   --quick       1 round of 2 s runs and smaller request counts (a smoke test, ~2 min)
#   --rounds N    rounds per case (default 3); tools take turns within a round
#   --out FILE    Markdown output (default target/bench-peers.md); the raw JSON goes beside it
#   --no-build    use the existing target/release/blast instead of `cargo build --release`
#   anything else is passed to scripts/bench_peers.py (see `python3 scripts/bench_peers.py -h`),
#   e.g. --cases 1,3 --duration 10 --keep-tmp
#
# Case 11 is TLS: nginx terminating https:// on its core, blast against wrk (keep-alive CPU
# per request) and h2load --h1 (a new connection and handshake per request); only it:
#   scripts/bench-peers.sh --cases 11
# Installs what is missing: Debian nginx-light, wrk, nghttp2-client (h2load), openssl (case
# 11's certificate), time (/usr/bin/time), linux-perf (case 10), oha (cargo install oha --locked), a venv with
# scripts/requirements.txt for scripts/async_baseline.py ($BASELINE_VENV is reused if set;
# default target/bench-venv).
# Everything runs on 127.0.0.1; nginx is pinned to the last CPU and the clients to the others.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY_SYS="${PYTHON:-python3}"

BUILD=1
PASS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) PASS+=(--quick) ;;
        --rounds) [ $# -ge 2 ] || { echo "--rounds needs a number" >&2; exit 2; }
                  PASS+=(--rounds "$2"); shift ;;
        --rounds=*) PASS+=(--rounds "${1#*=}") ;;
        --out) [ $# -ge 2 ] || { echo "--out needs a file" >&2; exit 2; }
               PASS+=(--out "$(realpath -m "$2")"); shift ;;
        --out=*) PASS+=(--out "$(realpath -m "${1#*=}")") ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; PASS+=("$@"); break ;;
        *) PASS+=("$1") ;;
    esac
    shift
done

say() { echo "bench-peers: $*" >&2; }
die() { say "$*"; exit 1; }

# --- Debian packages -------------------------------------------------------------------
APT=()
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then APT+=(nginx-light); fi
command -v wrk >/dev/null || APT+=(wrk)
command -v h2load >/dev/null || APT+=(nghttp2-client)
command -v openssl >/dev/null || APT+=(openssl)  # case 11's certificate
[ -x /usr/bin/time ] || APT+=(time)
command -v taskset >/dev/null || APT+=(util-linux)
command -v perf >/dev/null || APT+=(linux-perf)  # case 10
if [ ${#APT[@]} -gt 0 ]; then
    say "installing ${APT[*]}"
    [ "$(id -u)" -eq 0 ] || die "need root (or sudo) to apt-get install ${APT[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -q || die "apt-get update failed"
    timeout 900 apt-get install -y -q --no-install-recommends "${APT[@]}" || die "apt-get install failed"
    # The package may have started the system nginx on port 80; ours runs on its own port.
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
"$NGINX" -V 2>&1 | grep -q http_stub_status_module \
    || die "this nginx has no stub_status module (needed to count requests)"

# --- oha ---------------------------------------------------------------------------------
find_oha() {
    if command -v oha >/dev/null; then command -v oha
    elif [ -x "$HOME/.cargo/bin/oha" ]; then echo "$HOME/.cargo/bin/oha"
    fi
}
OHA="$(find_oha)"
# Only cases 1-4 and 8 run oha: a `--cases` list without them does not wait for its build.
CASES=""
for ((k = 0; k < ${#PASS[@]}; k++)); do
    case "${PASS[k]}" in
        --cases) CASES="${PASS[k + 1]:-}" ;;
        --cases=*) CASES="${PASS[k]#*=}" ;;
    esac
done
NEED_OHA=1
if [ -n "$CASES" ] && ! [[ ",$CASES," =~ ,(1|2|3|4|8), ]]; then
    NEED_OHA=0
fi
OHA_LOG=/tmp/oha_install.log
oha_log_done() { [[ "$(tail -n 1 "$OHA_LOG" 2>/dev/null)" =~ ^exit\ [0-9]+ ]]; }
oha_installing() { pgrep -f 'cargo install oha' >/dev/null 2>&1; }
if [ "$NEED_OHA" = 1 ] && [ -z "$OHA" ] && [ -f "$OHA_LOG" ] && ! oha_log_done && oha_installing; then
    # Someone else's `cargo install oha` is in progress: wait for it (at most 30 min).
    say "waiting for the oha install in progress ($OHA_LOG)"
    for _ in $(seq 360); do
        oha_log_done && break
        oha_installing || { sleep 2; break; }
        sleep 5
    done
    OHA="$(find_oha)"
fi
if [ "$NEED_OHA" = 1 ] && [ -z "$OHA" ]; then
    say "installing oha (cargo install oha --locked)"
    if timeout 1800 cargo install oha --locked >&2; then
        OHA="$(find_oha)"
    else
        say "oha did not install: the tables will go without it"
    fi
fi

# --- the async baseline's venv ---------------------------------------------------------
VENV="${BASELINE_VENV:-$ROOT/target/bench-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating the venv $VENV"
    timeout 120 "$PY_SYS" -m venv "$VENV" || die "cannot create the venv $VENV"
fi
if ! "$VENV/bin/python" -c 'import aiohttp' 2>/dev/null; then
    say "installing scripts/requirements.txt into $VENV"
    timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt" \
        || die "pip install -r scripts/requirements.txt failed"
fi

# --- blast -----------------------------------------------------------------------------
if [ "$BUILD" -eq 1 ]; then
    say "cargo build --release"
    (cd "$ROOT" && timeout 1800 cargo build --release) || die "cargo build --release failed"
    say "cargo build --release --example floor"
    (cd "$ROOT" && timeout 1800 cargo build --release --example floor) \
        || die "cargo build --release --example floor failed"
fi
[ -x "$ROOT/target/release/blast" ] || die "no target/release/blast"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

OHA_ARG=()
[ -n "$OHA" ] && OHA_ARG=(--oha "$OHA")
exec "$PY_SYS" "$HERE/bench_peers.py" --blast "$ROOT/target/release/blast" \
    --baseline-python "$VENV/bin/python" ${OHA_ARG[@]+"${OHA_ARG[@]}"} ${PASS[@]+"${PASS[@]}"}
