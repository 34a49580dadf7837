#!/usr/bin/env bash
# Makes sure the local Docker engine has debian:bookworm-slim, the base of both Driftless images.
# With no registry reachable, the image is built from the machine's own Debian mirror:
#   debootstrap --variant=minbase bookworm ROOTFS MIRROR; tar -C ROOTFS -c . | docker import - ...
# The rootfs tarball is cached under ${DRIFTLESS_TOOLS:-$HOME/.cache/driftless/tools}/rootfs, so
# a second run (or a run after `docker image rm`) only re-imports it.
#
# Exit codes: 0 image present; 3 docker is not available (callers skip image tests); other = error.
# Env: DEBIAN_MIRROR overrides the mirror found in /etc/apt/sources.list{,.d/*}.
set -euo pipefail

IMAGE="debian:bookworm-slim"
SUITE="bookworm"
TOOLS_ROOT="${DRIFTLESS_TOOLS:-$HOME/.cache/driftless/tools}"
CACHE_DIR="$TOOLS_ROOT/rootfs"
TARBALL="$CACHE_DIR/debian-$SUITE-minbase-$(dpkg --print-architecture 2>/dev/null || uname -m).tar"

log() { printf 'base-image: %s\n' "$*" >&2; }

if ! command -v docker >/dev/null 2>&1; then
    log "docker is not installed: cannot build or run images"
    exit 3
fi
if ! docker info >/dev/null 2>&1; then
    log "docker is installed but the engine does not answer (is dockerd running, may this user use it?)"
    exit 3
fi

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already present"
    exit 0
fi

# Prints the URI of the first Debian archive apt uses for the main suite (not -security,
# -updates or -backports), from one-line .list files and deb822 .sources files.
find_mirror() {
    local files=()
    [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    local f
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] && files+=("$f")
    done
    ((${#files[@]})) || return 1
    awk -v suite="$SUITE" '
        function consider(uri, suites,   n, parts, i) {
            n = split(suites, parts, /[ \t]+/)
            for (i = 1; i <= n; i++) {
                if (parts[i] == suite && uri !~ /security/) { print uri; found = 1; exit }
            }
        }
        function flush() {
            if (is_deb && uris != "" && suites != "" && enabled) {
                split(uris, u, /[ \t]+/); consider(u[1], suites)
            }
            is_deb = 0; uris = ""; suites = ""; enabled = 1
        }
        FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
        deb822 {
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            if ($0 ~ /^[ \t]*#/) next
            line = $0
            key = tolower(line); sub(/:.*/, "", key); gsub(/[ \t]/, "", key)
            val = line; sub(/^[^:]*:[ \t]*/, "", val)
            if (key == "types") is_deb = (val ~ /(^|[ \t])deb([ \t]|$)/)
            else if (key == "uris") uris = val
            else if (key == "suites") suites = val
            else if (key == "enabled") enabled = (tolower(val) != "no")
            next
        }
        /^[ \t]*deb[ \t]/ {
            line = $0
            sub(/^[ \t]*deb[ \t]+/, "", line)
            if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
            split(line, w, /[ \t]+/)
            consider(w[1], w[2])
        }
        END { if (!found) flush() }
    ' "${files[@]}"
}

build_rootfs_tarball() {
    if ! command -v debootstrap >/dev/null 2>&1 && [[ ! -x /usr/sbin/debootstrap ]]; then
        log "debootstrap is missing: run .ci/install-tools.sh first"
        exit 1
    fi
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { log "debootstrap needs root (or sudo)"; exit 1; }
        sudo=(sudo)
    fi
    local mirror="${DEBIAN_MIRROR:-}"
    if [[ -z "$mirror" ]]; then
        mirror="$(find_mirror || true)"
    fi
    if [[ -z "$mirror" ]]; then
        log "no Debian '$SUITE' mirror found in /etc/apt/sources.list{,.d/*}; set DEBIAN_MIRROR=URL"
        exit 1
    fi
    log "building the $SUITE minbase rootfs from $mirror (about a minute)"
    mkdir -p "$CACHE_DIR"
    ROOTFS_DIR="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
    trap '"${sudo[@]}" rm -rf "$ROOTFS_DIR" "$TARBALL.tmp"' EXIT
    "${sudo[@]}" debootstrap --variant=minbase "$SUITE" "$ROOTFS_DIR" "$mirror" >&2
    # Trim it the way the official -slim image is trimmed: no package lists, caches, docs or man pages.
    "${sudo[@]}" sh -c "cd '$ROOTFS_DIR' && rm -rf var/lib/apt/lists/* var/cache/apt/*.bin \
        var/cache/apt/archives/*.deb var/log/*.log usr/share/doc/* usr/share/man/* \
        usr/share/info/* debootstrap"
    "${sudo[@]}" tar --numeric-owner -C "$ROOTFS_DIR" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
}

if [[ -s "$TARBALL" ]]; then
    log "using the cached rootfs $TARBALL"
else
    build_rootfs_tarball
fi

docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --message "debootstrap --variant=minbase $SUITE (built by .ci/base-image.sh)" \
    - "$IMAGE" <"$TARBALL" >/dev/null
log "imported $IMAGE from $TARBALL"
