# Shared by the .ci scripts: `source .ci/lib.sh`.

# apt_install PACKAGE...: installs the Debian packages that are missing, running
# `apt-get update` at most once per hour (fresh machines have no package lists).
apt_install() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
            || missing+=("$package")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    local stamp=/var/lib/apt/periodic/driftless-update-stamp
    if [[ ! -e "$stamp" || -n "$(find "$stamp" -mmin +60 2>/dev/null)" ]]; then
        apt-get update -qq
        mkdir -p "$(dirname "$stamp")" && touch "$stamp"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    echo "installed: ${missing[*]}" >&2
}

# The directory tools are installed into.
tools_root() {
    echo "${DRIFTLESS_TOOLS:-$HOME/.cache/driftless/tools}"
}
