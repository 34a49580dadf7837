#!/usr/bin/env bash
# Builds the example plugins into OUTDIR as WASI reactor modules (docs/developer/plugins.md):
#   redact.wasm   plugins/examples/c-redact     C, Debian's clang and wasi-libc
#   release.wasm  plugins/examples/zig-release  Zig 0.17, from PyPI's ziglang wheel
#   motd.wasm     plugins/examples/rust-motd    Rust, Debian's rustc 1.63 (/usr/bin/rustc) and std
# .ci/tools/plugins.sh installs the toolchains. Re-runnable; Zig keeps its cache under ~/.cache.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
mkdir -p "$1"
out="$(cd "$1" && pwd)"
plugins="$(cd "$(dirname "$0")" && pwd)"
tools="${DRIFTLESS_TOOLS:-$HOME/.cache/driftless/tools}"
missing=()

# C: clang with the wasm32 target, wasi-libc as the sysroot (/usr/include/wasm32-wasi and
# /usr/lib/wasm32-wasi) and compiler-rt's wasm32 builtins.
clang=(clang --target=wasm32-wasi --sysroot=/usr)
if ! command -v clang >/dev/null; then
    missing+=("clang (Debian: clang lld)")
elif ! [[ -e /usr/include/wasm32-wasi/stdlib.h && -e /usr/lib/wasm32-wasi/libc.a ]]; then
    missing+=("wasi-libc (Debian: wasi-libc)")
elif ! [[ -e "$("${clang[@]}" -print-libgcc-file-name)" ]]; then
    missing+=("compiler-rt for wasm32 (Debian: libclang-rt-dev-wasm32)")
elif ! command -v wasm-ld >/dev/null && ! ls /usr/bin/wasm-ld-* >/dev/null 2>&1; then
    missing+=("wasm-ld (Debian: lld)")
fi

# Zig: $ZIG if set, else the ziglang wheel in plugins.sh's venv, else one python3 can import.
zig=()
if [[ -n "${ZIG:-}" ]]; then
    read -r -a zig <<<"$ZIG"
elif "$tools/zig/bin/python" -c 'import ziglang' 2>/dev/null; then
    zig=("$tools/zig/bin/python" -m ziglang)
elif python3 -c 'import ziglang' 2>/dev/null; then
    zig=(python3 -m ziglang)
fi
zig_version="$([[ ${#zig[@]} -gt 0 ]] && "${zig[@]}" version 2>/dev/null || true)"
if [[ "$zig_version" != 0.17.* ]]; then
    missing+=("zig 0.17 (found: ${zig_version:-none}; PyPI: ziglang==0.17.1)")
fi

# Rust: Debian's rustc by its full path (rustup's, first on PATH, has no wasm32-wasi std here).
rustc=/usr/bin/rustc
if ! [[ -x $rustc ]]; then
    missing+=("rustc (Debian: rustc)")
elif ! ls "$($rustc --print target-libdir --target wasm32-wasi)"/libstd-*.rlib >/dev/null 2>&1; then
    missing+=("Rust's std for wasm32-wasi (Debian: libstd-rust-dev-wasm32)")
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    echo "plugins/build.sh: missing toolchains, install them with .ci/tools/plugins.sh:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi

built() {
    echo "built $out/$1 ($(wc -c <"$out/$1") bytes)" >&2
}

rm -f "$out/redact.wasm" "$out/release.wasm" "$out/motd.wasm"

"${clang[@]}" -mexec-model=reactor -O2 -Wall -Wextra -Werror -s \
    -I "$plugins/sdk/c" -o "$out/redact.wasm" "$plugins/examples/c-redact/redact.c"
built redact.wasm

# -fno-entry: a reactor; -rdynamic: export the `export fn`s; a 1 MiB stack instead of 16 MiB.
"${zig[@]}" build-exe -target wasm32-wasi -fno-entry -rdynamic -O ReleaseSmall --stack 1048576 \
    --cache-dir "${XDG_CACHE_HOME:-$HOME/.cache}/driftless/zig-cache" \
    --name release -femit-bin="$out/release.wasm" \
    --dep driftless -Mroot="$plugins/examples/zig-release/release.zig" \
    -Mdriftless="$plugins/sdk/zig/driftless.zig"
built release.wasm

"$rustc" --edition 2021 --target wasm32-wasi --crate-type cdylib -C opt-level=2 -C strip=symbols \
    -D warnings -o "$out/motd.wasm" "$plugins/examples/rust-motd/motd.rs"
built motd.wasm
