#!/usr/bin/env bash
# Builds the release binaries the images ship, `driftless` (node agent) and `driftless-operator`
# (operator and scan runner), statically linked: the scan Job's init container copies the
# operator binary into the user's IaC image (hashicorp/terraform, ghcr.io/opentofu/opentofu,
# alpine/terragrunt are Alpine, musl), where a glibc-linked binary cannot start.
#
# Static glibc (`-C target-feature=+crt-static`) rather than a musl target: the toolchain this
# project builds with has no musl standard library (see docs/decisions.md). The explicit
# `--target` keeps build scripts and proc-macros, which run on the build machine, dynamic; the
# binaries land in target/<host triple>/release/ (CARGO_TARGET_DIR moves `target`).
#
# The one place these flags live: `make build`, .ci/test.sh and the image tests run this script.
# Extra arguments go to cargo. Prints the output directory as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

triple="$(rustc -vV | sed -n 's/^host: //p')"
case "$triple" in
*-linux-gnu) ;;
*)
    printf 'build-release: host %s is not a *-linux-gnu target; static glibc builds need one\n' \
        "$triple" >&2
    exit 1
    ;;
esac

# `relocation-model=static`: a static, non-PIE executable. Its read-only data needs no
# relocation at start, so those pages stay shared with the page cache (about 1 MB of the
# agent's RSS; docs/facts.md), as `-no-pie` gave the dynamic build; a static-pie binary
# relocates itself and dirties them.
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static -C relocation-model=static" \
    cargo build --release --locked --target "$triple" \
    -p driftless-agent -p driftless-operator "$@"

echo "${CARGO_TARGET_DIR:-target}/$triple/release"
