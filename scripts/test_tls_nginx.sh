#!/usr/bin/env bash
# blast over https:// against a real TLS terminator: nginx (OpenSSL) with a certificate from a
# CA made here, answering `/` itself, refusing bodies over 1 KiB (413) and proxying
# /api/generate to `blast mock` (a TLS-terminating proxy in front of Ollama). Each check
# compares blast's JSON with nginx's own access log: requests, status codes, the protocol
# and cipher negotiated, and which handshakes nginx resumed ($ssl_session_reused).
#
# Usage: scripts/test_tls_nginx.sh   (BLAST=path/to/blast, default target/debug/blast; needs
# openssl, and nginx on PATH or in /usr/sbin: `apt-get install -y nginx openssl`)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BLAST="${BLAST:-$PWD/target/debug/blast}"
[ -x "$BLAST" ] || { echo "no blast binary at $BLAST (cargo build first)" >&2; exit 2; }
NGINX="$(nginx_bin)"
command -v openssl >/dev/null || { echo "openssl is not installed" >&2; exit 2; }

work="$(mktemp -d)"
mock_pid="" nginx_pid=""
cleanup() { stop_and_remove "$work" "$nginx_pid" "$mock_pid"; }
trap cleanup EXIT

# A CA, a server certificate it signs for 127.0.0.1, and a second CA that signed nothing.
ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=$1" -keyout "$work/$1.key" -out "$work/$1.pem" 2>/dev/null
}
ca test-ca
ca other-ca
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    >"$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/test-ca.pem" -CAkey "$work/test-ca.key" \
    -CAcreateserial -days 2 -extfile "$work/server.ext" -out "$work/server.pem" 2>/dev/null

"$BLAST" mock --listen 127.0.0.1:0 --cores 1 --tokens 8 --token-delay 1ms 2>"$work/mock.log" &
mock_pid=$!
addr="$(mock_addr "$work/mock.log")"

port="$(free_port)"
{ nginx_conf_head "$work"; cat <<EOF; } >"$work/nginx.conf"
    log_format tls '\$request_method \$uri \$status \$ssl_session_reused \$ssl_protocol \$ssl_cipher';
    access_log $work/access.log tls;
    ssl_certificate $work/server.pem;
    ssl_certificate_key $work/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:1m;
    upstream mock { server $addr; keepalive 8; }
    server {
        listen 127.0.0.1:$port ssl;
        client_max_body_size 1k;
        location = / { return 200 "hello\n"; }
        location /api/ {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
start_nginx "$NGINX" "$work" --cacert "$work/test-ca.pem" "https://127.0.0.1:$port/"

url="https://127.0.0.1:$port"
failed=0
# run NAME EXPECTED_EXIT BLAST_ARGS...: run blast with --json, then check it (python below)
# against the access log lines it added.
run() {
    local name="$1" want="$2" code=0
    shift 2
    : >"$work/access.log"
    timeout 60 "$BLAST" --quiet --json "$work/$name.json" "$@" >"$work/$name.out" 2>&1 || code=$?
    sleep 0.3 # nginx writes its log line after the response
    if [ "$code" != "$want" ]; then
        echo "FAIL  $name: exit $code, wanted $want"
        cat "$work/$name.out"
        failed=$((failed + 1))
        return
    fi
    if python3 - "$name" "$work/$name.json" "$work/access.log" <<'PY'; then :; else failed=$((failed + 1)); fi
import json, sys
name, doc, log = sys.argv[1], json.load(open(sys.argv[2])), open(sys.argv[3]).read().split("\n")
lines = [l.split() for l in log if l]
req, conns = doc["requests"], doc["connections"]
fail = []
def check(ok, what):
    if not ok:
        fail.append(what)
logged = len(lines)
reused = sum(1 for l in lines if l[3] == "r")
statuses = {}
for l in lines:
    statuses[l[2]] = statuses.get(l[2], 0) + 1
blast_status = {k: v for k, v in doc["status"].items() if v}
if name != "wrong-ca":
    # (A request whose handshake failed counts as sent and failed, and never reaches nginx.)
    check(logged == req["sent"], f"nginx logged {logged} requests, blast sent {req['sent']}")
    check(blast_status == statuses, f"status codes: blast {blast_status}, nginx {statuses}")
    want = "TLSv1.2" if name == "tls12" else "TLSv1.3"
    check(all(l[4] == want for l in lines), f"protocols: {set(l[4] for l in lines)}")
    check(conns["tls_handshakes"] == conns["opened"],
          f"{conns['tls_handshakes']} handshakes on {conns['opened']} connections")
    check(sum(conns["tls_ciphers"].values()) == conns["tls_handshakes"],
          f"handshakes by cipher {conns['tls_ciphers']} of {conns['tls_handshakes']}")
    if want == "TLSv1.3":
        # TLS 1.3 suites have one name in IANA's list, OpenSSL's and blast's.
        check(set(conns["tls_ciphers"]) == {l[5] for l in lines},
              f"ciphers: blast {conns['tls_ciphers']}, nginx {set(l[5] for l in lines)}")
if name == "keep-alive":
    check(req["ok"] == 500 and conns["opened"] <= 10, f"requests {req}, connections {conns}")
elif name == "close":
    # Every request on its own connection; nginx says how many it resumed.
    check(req["ok"] == 200 and conns["opened"] == 200, f"requests {req}, connections {conns}")
    check(conns["tls_resumed"] == reused,
          f"blast counted {conns['tls_resumed']} resumed handshakes, nginx {reused}")
    check(reused >= 150, f"only {reused} of 200 handshakes resumed")
elif name == "no-resume":
    check(req["ok"] == 100 and reused == 0 and conns["tls_resumed"] == 0,
          f"requests {req}, nginx resumed {reused}, connections {conns}")
elif name == "tls12":
    check(req["ok"] == 50 and list(conns["tls_ciphers"]) == ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]
          and {l[5] for l in lines} == {"ECDHE-ECDSA-AES128-GCM-SHA256"},
          f"requests {req}, blast {conns['tls_ciphers']}, nginx {set(l[5] for l in lines)}")
elif name == "aes128":
    check(req["ok"] == 50 and list(conns["tls_ciphers"]) == ["TLS_AES_128_GCM_SHA256"],
          f"requests {req}, ciphers {conns['tls_ciphers']}")
elif name == "stream":
    check(req["ok"] == 20 and doc["tokens"]["output"] == 20 * 8,
          f"requests {req}, tokens {doc['tokens']}")
elif name == "too-large":
    # nginx answers 413 from the head, reading the rest of the body to discard it (and
    # blast exits 1: no response was ok).
    check(blast_status == {"413": 3} and req["completed"] == 3, f"requests {req}, {blast_status}")
elif name == "wrong-ca":
    msgs = " ".join(m for ms in doc.get("error_messages", {}).values() for m in ms)
    check(doc["errors"]["tls"] == req["failed"] == req["sent"] and logged == 0,
          f"requests {req}, errors {doc['errors']}, nginx logged {logged}")
    check("UnknownIssuer" in msgs, f"error messages: {doc.get('error_messages')}")
if fail:
    print(f"FAIL  {name}:", *fail, sep="\n  ")
    sys.exit(1)
print(f"ok    {name}: {req['sent']} sent, nginx logged {logged} ({statuses}), "
      f"{conns['tls_handshakes']} handshakes, {reused} resumed by nginx")
PY
}

ca="--cacert $work/test-ca.pem"
head -c 4M /dev/zero >"$work/body.bin"
# shellcheck disable=SC2086  # $ca is two words on purpose
{
    run keep-alive 0 "$url/" $ca --conns 10 --requests 500
    run close 0 "$url/" $ca --conns 10 --requests 200 -H 'Connection: close'
    run no-resume 0 "$url/" $ca --conns 10 --requests 100 -H 'Connection: close' --no-tls-resume
    run tls12 0 "$url/" $ca --conns 5 --requests 50 --tls-version 1.2 \
        --tls-ciphers TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    run aes128 0 "$url/" $ca --conns 5 --requests 50 --tls-ciphers TLS_AES_128_GCM_SHA256
    run stream 0 "$url/api/generate" $ca --api ollama-generate --conns 4 --requests 20
    run too-large 1 "$url/" $ca --conns 1 --requests 3 --body-file "$work/body.bin"
    run wrong-ca 1 "$url/" --cacert "$work/other-ca.pem" --conns 2 --requests 4
}
if [ "$failed" -gt 0 ]; then
    echo "TLS against nginx: $failed check(s) failed" >&2
    exit 1
fi
echo "TLS against nginx: 8 passed"
