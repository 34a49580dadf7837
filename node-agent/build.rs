//! Links the `driftless` binary as a position-dependent executable: the dynamic loader then has
//! no relocation table to apply to the binary's read-only data at start, which keeps those pages
//! shared with the page cache instead of copied into each agent (about 1 MB of RSS; see
//! docs/facts.md, Performance, and docs/decisions.md).
//!
//! Not for statically linked builds (`.ci/build-release.sh`, `-C target-feature=+crt-static`):
//! they are non-PIE through `-C relocation-model=static` already, and `-no-pie` on top of rustc's
//! default static-pie yields a binary that asks for the glibc
//! loader and crashes at start.
fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_CFG_TARGET_FEATURE");
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if !features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-arg-bin=driftless=-no-pie");
    }
}
