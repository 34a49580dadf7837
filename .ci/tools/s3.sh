#!/usr/bin/env bash
# The S3-compatible test server: moto's standalone server, from PyPI, into a private venv.
# Tests start it themselves with `$DRIFTLESS_TOOLS/s3/bin/moto_server -H 127.0.0.1 -p PORT`.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
root="$(tools_root)"
venv="$root/s3"
if [[ -x "$venv/bin/moto_server" ]]; then
    echo "s3: moto_server already in $venv/bin" >&2
    exit 0
fi
python3 -m venv "$venv" 2>/dev/null || {
    apt_install python3-venv
    python3 -m venv "$venv"
}
"$venv/bin/pip" install --quiet "moto[server]==5.1.4"
echo "s3: installed moto_server into $venv/bin" >&2
