#!/usr/bin/env bash
# For the image test that runs the scan runner in a musl image without glibc
# (e2e/tests/images.rs, runner_starts_in_a_musl_image_without_glibc): Debian's `musl` (the libc,
# /lib/ld-musl-<arch>.so.1) and `busybox-static` (a shell and `cp` for that image).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
apt_install musl busybox-static
echo "musl: $(readlink -f "/lib/ld-musl-$(uname -m).so.1"), busybox: /bin/busybox" >&2
