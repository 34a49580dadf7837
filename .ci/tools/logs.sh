#!/usr/bin/env bash
# Receivers the log pipeline tests and benchmark use: rsyslog (private rsyslogd instances started
# by the tests, UDP/TCP, and TLS through the GnuTLS driver), the openssl CLI (the TLS test's
# certificates) and moto's S3 server (installed by s3.sh). logs_metrics needs promtool from
# facts.sh.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
apt_install rsyslog rsyslog-gnutls openssl procps
"$(dirname "$0")/s3.sh"
echo "logs: rsyslogd at $(command -v rsyslogd || echo /usr/sbin/rsyslogd)" >&2
