#!/usr/bin/env bash
# Runs every `blast ...` example of README.md's code blocks against `blast mock` on a free
# loopback port, so the README cannot show a command that does not work. Each command's
# URL host:port is pointed at the mock, its duration cut to 1s, `--cores` capped at this
# machine's CPUs, `--listen` and `--prometheus` moved to a free port, `--prometheus-linger`
# cut to 1s, and each runs under `timeout`. A command fails the script when it exits non-zero
# (a `blast mock` example passes when it is still serving after 2 s).
#
# Usage: scripts/test_readme_examples.sh   (BLAST=path/to/blast, default target/debug/blast)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BLAST="${BLAST:-$PWD/target/debug/blast}"
README="$PWD/README.md"
[ -x "$BLAST" ] || { echo "no blast binary at $BLAST (cargo build first)" >&2; exit 2; }

work="$(mktemp -d)"
mock_pid="" tls_pid=""
# The mocks end by the signal: their status is not the script's.
cleanup() { stop_and_remove "$work" "$tls_pid" "$mock_pid"; }
trap cleanup EXIT

# `blast` on PATH is the binary under test, as the README's commands spell it.
mkdir "$work/bin" "$work/run"
ln -s "$BLAST" "$work/bin/blast"
export PATH="$work/bin:$PATH"

# The mock on a port the kernel picks; its first line names the address.
blast mock --listen 127.0.0.1:0 --cores 1 2>"$work/mock.log" &
mock_pid=$!
addr="$(mock_addr "$work/mock.log")"

# https:// examples: a CA, a server certificate for localhost and a client certificate
# (the names the README uses, in the directory the examples run in), and a second mock
# serving TLS with them. Without openssl they are skipped.
tls_addr=""
if command -v openssl >/dev/null; then
    (cd "$work/run"
        ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        openssl req -x509 "${ec[@]}" -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=readme-ca
        for who in server client; do
            openssl req "${ec[@]}" -keyout "$who-key.pem" -out "$who.csr" -subj "/CN=$who"
        done
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
            -out cert.pem -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1')
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
            -out client.pem -extfile <(printf 'extendedKeyUsage=clientAuth')
        mv server-key.pem key.pem) >/dev/null 2>&1
    blast mock --listen 127.0.0.1:0 --cores 1 --tls-cert "$work/run/cert.pem" \
        --tls-key "$work/run/key.pem" 2>"$work/tls-mock.log" &
    tls_pid=$!
    for _ in $(seq 100); do
        tls_addr="$(sed -n 's|.*listening on https://[^:]*:\([0-9]*\).*|localhost:\1|p' "$work/tls-mock.log")"
        [ -n "$tls_addr" ] && break
        sleep 0.05
    done
fi

# Examples that cannot run here, each with the reason (matched as a substring of the command).
declare -A SKIP=(
)
if [ -z "$tls_addr" ]; then
    SKIP["https://"]="no openssl to make certificates (tests/tls.rs covers TLS)"
fi

# Extract: code-block lines (fenced or indented) that start with `blast `, continuation
# lines joined, trailing `# comments` dropped; then rewritten to run against the mock.
mapfile -t commands < <(python3 - "$README" "$addr" "$tls_addr" <<'EOF'
import os, re, sys
readme, addr, tls_addr = sys.argv[1], sys.argv[2], sys.argv[3]
cpus = len(os.sched_getaffinity(0))
lines, in_fence, out = open(readme).read().split("\n"), False, []
i = 0
while i < len(lines):
    line = lines[i]
    i += 1
    if line.startswith("```"):
        in_fence = not in_fence
        continue
    text = line if in_fence else (line[4:] if line.startswith("    ") else None)
    if text is None or not text.lstrip().startswith("blast "):
        continue
    cmd = text.strip()
    while cmd.endswith("\\") and i < len(lines):
        cmd = cmd[:-1].rstrip() + " " + lines[i].strip()
        i += 1
    cmd = re.sub(r"\s+#\s.*$", "", cmd).strip()
    cmd = re.sub(r"http://[^/\s'\"]+", f"http://{addr}", cmd)
    if tls_addr:
        cmd = re.sub(r"https://[^/\s'\"]+", f"https://{tls_addr}", cmd)
    cmd = re.sub(r"--listen \S+", "--listen 127.0.0.1:0", cmd)
    cmd = re.sub(r"--prometheus \S+", "--prometheus 127.0.0.1:0", cmd)
    cmd = re.sub(r"--prometheus-linger \S+", "--prometheus-linger 1s", cmd)
    cmd = re.sub(r"(--duration|-d) \S+", "--duration 1s", cmd)
    # No more pinned cores than this machine has.
    cmd = re.sub(r"(--cores|-c) (\d+)", lambda m: f"{m[1]} {min(int(m[2]), cpus)}", cmd)
    # A sweep's steps run 300ms each (it refuses --duration), the whole sweep 15s at most.
    if cmd.startswith("blast sweep"):
        cmd = re.sub(r"--step-duration \S+", "", cmd) + " --step-duration 300ms --max-time 15s"
    # A load test (anything with a URL but the mock) runs 1s at most.
    loads = ("http://" in cmd or "https://" in cmd) and not cmd.startswith(("blast mock", "blast sweep"))
    if loads and "--duration" not in cmd:
        cmd += " --duration 1s"
    out.append(cmd)
print("\n".join(out))
EOF
)
[ "${#commands[@]}" -ge 10 ] || { echo "only ${#commands[@]} examples found in README.md" >&2; exit 1; }

# `compare` examples read before.json and after.json: one short run, twice the same result,
# so a threshold cannot be crossed by noise.
(cd "$work/run" && blast -q --duration 500ms --json before.json "http://$addr/" >/dev/null \
    && cp before.json after.json)
# `merge` examples read shard-*.json: the two shards of one short run.
(cd "$work/run" && for i in 0 1; do
    blast -q --shard "$i/2" --requests 20 --json "shard-$i.json" "http://$addr/" >/dev/null || exit 1
done)

passed=0 failed=0 skipped=0
for cmd in "${commands[@]}"; do
    reason=""
    for key in "${!SKIP[@]}"; do
        [[ "$cmd" == *"$key"* ]] && reason="${SKIP[$key]}"
    done
    if [ -n "$reason" ]; then
        echo "skip  $cmd  ($reason)"
        skipped=$((skipped + 1))
        continue
    fi
    set +e
    if [[ "$cmd" == "blast mock"* ]]; then
        # A server: it passes when it is still serving when `timeout` stops it.
        (cd "$work/run" && timeout 2 bash -c "$cmd") >"$work/out" 2>&1
        code=$?
        ok=$([ "$code" = 124 ] && grep -q "listening on" "$work/out" && echo 1)
    else
        (cd "$work/run" && timeout 30 bash -c "$cmd") >"$work/out" 2>&1
        code=$?
        ok=$([ "$code" = 0 ] && echo 1)
    fi
    set -e
    if [ -n "$ok" ]; then
        echo "ok    $cmd"
        passed=$((passed + 1))
    else
        echo "FAIL  $cmd  (exit $code)"
        sed 's/^/      /' "$work/out" | tail -20
        failed=$((failed + 1))
    fi
done
echo "README examples: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
