#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s each): `fuzz/run.sh [SECONDS]`.
# Not part of CI. Crashes land in fuzz/artifacts/<target>/; turn each into a regression test
# (crds/tests/ for the loader, node-agent/src/apply/template.rs tests for templates).
# cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP lets the pinned stable toolchain accept them.
# No sanitizer (`-s none`): the code forbids `unsafe`, so what the fuzzers look for is panics,
# hangs and runaway memory, which libFuzzer reports without one.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in loader template; do
    cargo fuzz run -s none "$target" "corpus/$target" -- -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048
done
