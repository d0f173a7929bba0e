#!/usr/bin/env bash
# Renders blast's HTML reports in headless Chromium (Debian's package): `blast demo --html`,
# a `blast compare --html` of two runs, and `blast report` of a sweep-shaped document made
# from a real result. A page fails when Chromium logs any console message (a script error,
# a blocked or failed load: the report has no script and loads nothing) or when its
# rendered DOM lacks the charts the file holds (a blank page). Screenshots go to
# target/html-report/ for a person to look at. The check is first shown to fail on a page
# with a script error and on a page with no chart.
#
# Usage: scripts/test_html_report.sh   (BLAST=path/to/blast, CHROMIUM=path/to/chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
BLAST="${BLAST:-$PWD/target/debug/blast}"
CHROMIUM="${CHROMIUM:-chromium}"
[ -x "$BLAST" ] || { echo "no blast binary at $BLAST (cargo build first)" >&2; exit 2; }
command -v "$CHROMIUM" >/dev/null || { echo "no $CHROMIUM (apt-get install -y chromium)" >&2; exit 2; }

out="$PWD/target/html-report"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

chromium() {
    local profile
    profile="$(mktemp -d "$work/profile.XXXXXX")"
    timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync --disable-dev-shm-usage \
        --user-data-dir="$profile" --enable-logging=stderr --v=0 --hide-scrollbars "$@"
}

# check PAGE NAME: render PAGE, judge it, save NAME.png. Returns non-zero with a reason.
check() {
    local page="$1" name="$2" want got size
    if ! chromium --dump-dom "file://$page" >"$work/$name.dom" 2>"$work/$name.log"; then
        echo "FAIL  $name: chromium failed"; tail -5 "$work/$name.log"; return 1
    fi
    # Console messages are logged as `INFO:CONSOLE:1] "..."` (older builds: `CONSOLE(1)`).
    if grep -q ':CONSOLE' "$work/$name.log"; then
        echo "FAIL  $name: console messages:"; grep ':CONSOLE' "$work/$name.log" | head -5
        return 1
    fi
    want="$(grep -o '<svg' "$page" | wc -l)"
    got="$(grep -o '<svg' "$work/$name.dom" | wc -l)"
    if [ "$want" -lt 1 ] || [ "$got" != "$want" ]; then
        echo "FAIL  $name: $got chart(s) rendered, $want in the file (blank page?)"; return 1
    fi
    if ! chromium --screenshot="$out/$name.png" --window-size=1280,2000 "file://$page" \
        >/dev/null 2>"$work/$name.shot.log"; then
        echo "FAIL  $name: no screenshot"; tail -5 "$work/$name.shot.log"; return 1
    fi
    # A white 1280x2000 PNG is a few kB; one with text and charts is far larger.
    size="$(stat -c %s "$out/$name.png")"
    if [ "$size" -lt 40000 ]; then
        echo "FAIL  $name: the screenshot is nearly empty ($size bytes)"; return 1
    fi
    echo "ok    $name: $got charts, no console message, $out/$name.png ($size bytes)"
}

# The runs: the demo (closed loop), and an open-loop demo for the comparison.
"$BLAST" demo --duration 2s -q --html "$work/demo.html" --json "$work/demo.json" >/dev/null
"$BLAST" demo --duration 2s -q --rate 150 --json "$work/open.json" >/dev/null
"$BLAST" compare "$work/demo.json" "$work/open.json" --html "$work/compare.html" >/dev/null
# A sweep document (`blast sweep`'s shape), each step a real result.
python3 - "$work/open.json" "$work/sweep.json" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
def step(kind, offered, achieved, p50, p99):
    return {"kind": kind, "offered_rps": offered, "achieved_rps": achieved, "ok_pct": 100.0,
            "p50_ms": p50, "p99_ms": p99, "result": result}
doc = {"sweep": {"max_sustainable_rps": 120.0, "limit": "p99", "unloaded_p99_ms": 180.0,
       "steps": [step("unloaded", None, 5.0, 176.0, 180.0), step("ceiling", None, 180.0, 300.0, 900.0),
                 step("rate", 60.0, 60.0, 176.0, 181.0), step("rate", 120.0, 119.0, 178.0, 190.0),
                 step("rate", 150.0, 149.0, 400.0, 950.0)]}}
json.dump(doc, open(sys.argv[2], "w"))
EOF
"$BLAST" report "$work/sweep.json" --html "$work/sweep.html"

# The check can fail: a report with a script error, and a page with no chart.
sed 's|</body>|<script>notDefinedAnywhere();</script></body>|' "$work/demo.html" >"$work/broken.html"
printf '<!DOCTYPE html><html><body><p>nothing</p></body></html>\n' >"$work/blank.html"
for bad in broken blank; do
    if check "$work/$bad.html" "$bad" >"$work/$bad.verdict"; then
        echo "the check passed the $bad page:" >&2; cat "$work/$bad.verdict" >&2; exit 1
    fi
    echo "ok    the $bad page fails the check: $(head -1 "$work/$bad.verdict")"
done
rm -f "$out/broken.png" "$out/blank.png"

failed=0
for name in demo compare sweep; do
    check "$work/$name.html" "$name" || failed=$((failed + 1))
    cp "$work/$name.html" "$out/$name.html"
done
echo "HTML reports: $((3 - failed)) passed, $failed failed"
[ "$failed" = 0 ]
