#!/usr/bin/env bash
# `blast overhead` with a real proxy: nginx (streaming, keep-alive upstream) in front of
# `blast mock`, both on free loopback ports. Checks that each side got every answer, that
# nginx's access log and the mock's request counter agree with blast's counts per side, that
# the tokens match through nginx, and that the p50 overhead nginx adds is small and positive
# at most a few ms (no timing finer than that: the machine is shared).
#
# Usage: scripts/test_overhead_nginx.sh   (BLAST=path/to/blast, default target/debug/blast;
# needs nginx on PATH or in /usr/sbin: `apt-get install -y nginx`)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BLAST="${BLAST:-$PWD/target/debug/blast}"
[ -x "$BLAST" ] || { echo "no blast binary at $BLAST (cargo build first)" >&2; exit 2; }
NGINX="$(nginx_bin)"

work="$(mktemp -d)"
mock_pid="" nginx_pid=""
cleanup() { stop_and_remove "$work" "$nginx_pid" "$mock_pid"; }
trap cleanup EXIT

"$BLAST" mock --listen 127.0.0.1:0 --cores 1 --tokens 16 --token-delay 1ms 2>"$work/mock.log" &
mock_pid=$!
addr="$(mock_addr "$work/mock.log")"

port="$(free_port)"
{ nginx_conf_head "$work"; cat <<EOF; } >"$work/nginx.conf"
    access_log $work/access.log;
    upstream mock { server $addr; keepalive 32; }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
start_nginx "$NGINX" "$work" "http://127.0.0.1:$port/"
: >"$work/access.log"
before="$(curl -s "http://$addr/metrics" | awk '/^mock_requests_total\{path="\/api\/generate"/ {n += $2} END {print n + 0}')"

"$BLAST" overhead --via "http://127.0.0.1:$port/api/generate" --direct "http://$addr/api/generate" \
    --api ollama-generate --rate 50 --requests 100 --conns 8 --quiet --json "$work/overhead.json"

after="$(curl -s "http://$addr/metrics" | awk '/^mock_requests_total\{path="\/api\/generate"/ {n += $2} END {print n + 0}')"
proxied="$(grep -c 'POST /api/generate' "$work/access.log" || true)"
python3 - "$work/overhead.json" "$proxied" "$((after - before))" <<'EOF'
import json, sys
doc, proxied, upstream = json.load(open(sys.argv[1]))["overhead"], int(sys.argv[2]), int(sys.argv[3])
via, direct = doc["via"]["requests"], doc["direct"]["requests"]
fail = []
for name, r in (("via", via), ("direct", direct)):
    if r["sent"] != 100 or r["ok"] != 100:
        fail.append(f"{name}: {r}")
if proxied != via["sent"]:
    fail.append(f"nginx logged {proxied} requests, blast sent {via['sent']} through it")
if upstream != via["sent"] + direct["sent"]:
    fail.append(f"the mock counted {upstream}, blast sent {via['sent']} + {direct['sent']}")
if not doc["tokens"]["match"]:
    fail.append(f"tokens differ through nginx: {doc['tokens']}")
p50 = doc["delta"]["latency"]["p50"]
if not -1.0 < p50["delta_ms"] < 5.0:
    fail.append(f"nginx's p50 overhead {p50} is not a few ms at most")
codes = [w["code"] for w in doc["warnings"]]
if "tokens_mismatch" in codes or "proxy_buffers_stream" in codes:
    fail.append(f"warnings: {doc['warnings']}")
if fail:
    print("FAIL", *fail, sep="\n  ")
    sys.exit(1)
print(f"ok    blast overhead through nginx: p50 +{p50['delta_ms']:.3f} ms "
      f"[{p50['ci95_low_ms']}, {p50['ci95_high_ms']}], {proxied} proxied, {upstream} upstream")
EOF
