#!/usr/bin/env bash
# Validate the Kubernetes manifests under deploy/kubernetes/ against the API schemas with
# kubernetes-validate (from PyPI, into a venv under target/ that later runs reuse), strictly:
# an unknown field is an error.
#
#   bash scripts/validate_k8s.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${K8S_VALIDATE_VENV:-$ROOT/target/k8s-validate-venv}"
PY_SYS="${PYTHON:-python3}"

if ! [ -x "$VENV/bin/kubernetes-validate" ]; then
    timeout 120 "$PY_SYS" -m venv "$VENV"
    timeout 300 "$VENV/bin/pip" install -q --disable-pip-version-check kubernetes-validate
fi
"$VENV/bin/kubernetes-validate" --strict deploy/kubernetes/*.yaml
