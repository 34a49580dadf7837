#!/usr/bin/env bash
# Records node-agent/link/hot-text.txt: the code the release `driftless` binary runs while it
# starts and serves /metrics (the default collectors, an empty configuration directory), as
# section patterns for the linker to place together (see node-agent/build.rs and
# docs/facts.md#performance). Run it after a change that moves the scrape path, then rebuild:
#
#   cargo build --release -p driftless-agent --bin driftless && node-agent/link/record.sh
#
# Needs valgrind (callgrind counts every function that runs, however rarely) and curl.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$(realpath "${DRIFTLESS_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/driftless}")"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/conf"
port=19199
valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$work/cg.out" \
    "$bin" agent --config "$work/conf" --listen "127.0.0.1:$port" --log-level warn \
    >"$work/valgrind.log" 2>&1 &
pid=$!
for _ in $(seq 120); do
    curl -sf -m 2 -o /dev/null "http://127.0.0.1:$port/metrics" && break
    sleep 1
done
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/metrics"
done
kill -INT "$pid"
wait "$pid" || true
# Functions of the binary itself, in the order callgrind first met them; a symbol's hash
# (`17h<16 hex>E`) and LLVM's local-copy suffix (`.N`) become wildcards, so the list keeps
# matching as unrelated code changes.
awk -v bin="$bin" '
    /^ob=/ { ours = (substr($0, 4) == bin) }
    /^fn=/ && ours {
        name = substr($0, 4)
        sub(/'"'"'[0-9]+$/, "", name)
        sub(/\.[0-9]+$/, "", name)
        if (name !~ /^_(ZN|R)/) next
        sub(/17h[0-9a-f]+E$/, "17h*E", name)
        if (!(name in seen)) { seen[name] = 1; print ".text." name }
    }' "$work/cg.out" >"$root/node-agent/link/hot-text.txt"
wc -l "$root/node-agent/link/hot-text.txt"
