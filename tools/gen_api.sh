#!/usr/bin/env bash
# Regenerate pilot/api (betterproto2 classes) from proto/ (Istio networking and security API schema).
# Usage: tools/gen_api.sh [OUT_DIR]   (default OUT_DIR: pilot/api; PYTHON may name the interpreter whose env has grpcio-tools and
# betterproto2-compiler; default: python3 on PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# protoc finds the plugin (protoc-gen-python_betterproto2) on PATH: put the interpreter's bin dir first.
PY_BIN="$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')")"
export PATH="$PY_BIN:$PATH"
OUT="${1:-pilot/api}"
rm -rf "$OUT"
mkdir -p "$OUT"
"$PYTHON" -m grpc_tools.protoc -I proto --python_betterproto2_out="$OUT" \
  proto/istio/networking/v1alpha3/*.proto proto/istio/security/v1beta1/*.proto proto/istio/type/v1beta1/*.proto
test -f "$OUT/__init__.py" || : > "$OUT/__init__.py"
echo "generated $OUT from proto/"
