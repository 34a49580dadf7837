#!/usr/bin/env bash
# What the host configuration tests (node-agent/tests/system_*.rs, audit_*.rs) need on a fresh
# Debian 12: real dpkg/apt to install test packages into temporary roots, systemctl for
# `systemctl --root`, shadow-utils' pwck/grpck to check the account files we write, and the
# moto S3 server (installed by s3.sh) for the audit sink.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
apt_install dpkg apt passwd systemd
"$(dirname "$0")/s3.sh"
# `apply.sh bench`: the peers of `make bench-apply` too (not needed by the tests).
if [[ "${1:-}" == "bench" ]]; then
    apt_install ansible-core cfengine3 time
fi
echo "apply: dpkg, apt, passwd, systemd and moto are installed" >&2
