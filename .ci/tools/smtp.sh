#!/usr/bin/env bash
# The SMTP test server for the email receiver's tests (operator/tests/notify_email.rs,
# e2e/tests/notify.rs): aiosmtpd from PyPI, into a private venv, plus the openssl CLI that the
# tests make their throwaway server certificates with. Tests run
# `$DRIFTLESS_TOOLS/smtp/bin/python operator/tests/fixtures/smtp_server.py ...`.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
apt_install openssl
root="$(tools_root)"
venv="$root/smtp"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
    echo "smtp: aiosmtpd already in $venv" >&2
    exit 0
fi
python3 -m venv "$venv" 2>/dev/null || {
    apt_install python3-venv
    python3 -m venv "$venv"
}
"$venv/bin/pip" install --quiet "aiosmtpd==1.4.6"
echo "smtp: installed aiosmtpd into $venv" >&2
