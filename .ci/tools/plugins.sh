#!/usr/bin/env bash
# Toolchains for the example plugins, which plugins/build.sh builds into WASI modules:
# - C: Debian's clang, lld (wasm-ld), wasi-libc (the sysroot, /usr/include/wasm32-wasi and
#   /usr/lib/wasm32-wasi) and compiler-rt's wasm32 builtins;
# - Rust: Debian's rustc 1.63 and its wasm32-wasi std, used as /usr/bin/rustc (rustup's
#   toolchain in ~/.cargo/bin stays first on PATH for everything else);
# - Zig 0.17.1: the `ziglang` wheel from PyPI, in a private venv (`$venv/bin/python -m ziglang`);
# - docker-registry: an OCI registry the tests push a plugin to and install it from.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
apt_install clang lld wasi-libc libclang-rt-dev-wasm32 rustc libstd-rust-dev-wasm32 docker-registry
root="$(tools_root)"
venv="$root/zig"
if [[ -x "$venv/bin/python" ]] && [[ "$("$venv/bin/python" -m ziglang version 2>/dev/null)" == "0.17.1" ]]; then
    echo "plugins: zig 0.17.1 already in $venv" >&2
else
    python3 -m venv "$venv" 2>/dev/null || {
        apt_install python3-venv
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install --quiet "ziglang==0.17.1"
    echo "plugins: installed zig $("$venv/bin/python" -m ziglang version) into $venv" >&2
fi
echo "plugins: $(clang --version | head -1), $(/usr/bin/rustc --version) (/usr/bin/rustc)" >&2
