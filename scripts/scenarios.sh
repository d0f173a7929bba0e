#!/usr/bin/env bash
# An interactive menu over blast's named scenarios, for people who like menus:
# pick a scenario, a target and an API, confirm, and blast runs it.
#
#   scripts/scenarios.sh            (uses `blast` from PATH, else target/release/blast)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if command -v blast >/dev/null 2>&1; then
    BLAST=blast
elif [ -x "$here/../target/release/blast" ]; then
    BLAST="$here/../target/release/blast"
else
    echo "blast not found: run 'cargo build --release' first (or put blast on PATH)" >&2
    exit 2
fi

mapfile -t names < <("$BLAST" scenario list | awk 'NR > 1 && $1 != "blast" && NF > 1 { print $1 }')
if [ "${#names[@]}" -eq 0 ]; then
    echo "no scenarios found" >&2
    exit 2
fi

echo "Scenarios:"
"$BLAST" scenario list | tail -n +2
echo
PS3="Scenario number (Ctrl-D to quit): "
select name in "${names[@]}"; do
    [ -n "${name:-}" ] && break
    echo "pick a number from the list"
done
[ -n "${name:-}" ] || exit 0

read -r -p "Target URL [http://localhost:11435/]: " url
url="${url:-http://localhost:11435/}"
read -r -p "API (none, ollama-generate, ollama-chat, openai-chat, openai-completions) [ollama-generate]: " api
api="${api:-ollama-generate}"
read -r -p "Prompts (short, medium, long; comma-separated) [short,medium]: " prompts
prompts="${prompts:-short,medium}"
read -r -p "Extra options (e.g. --duration 30s) []: " extra

cmd=("$BLAST" scenario "$name" "$url" --api "$api")
[ "$api" != none ] && cmd+=(--prompts "$prompts")
# shellcheck disable=SC2206 # extra options are meant to be split into words
[ -n "$extra" ] && cmd+=($extra)
cmd+=(--log "${BLAST_LOG:-load_test.log}")

echo
echo "About to run: ${cmd[*]}"
read -r -p "Go? [y/N] " ok
case "$ok" in
    y | Y | yes) exec "${cmd[@]}" ;;
    *) echo "cancelled" ;;
esac
