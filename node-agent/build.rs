//! Link settings of the `driftless` binary that keep the agent's resident memory small (see
//! docs/facts.md, Performance, and docs/decisions.md):
//!
//! - A position-dependent executable (`-no-pie`): the dynamic loader then has no relocation
//!   table to apply to the binary's read-only data at start, which keeps those pages shared with
//!   the page cache instead of copied into each agent (about 1 MB of RSS). Not for statically
//!   linked builds (`.ci/build-release.sh`, `-C target-feature=+crt-static`): they are non-PIE
//!   through `-C relocation-model=static` already, and `-no-pie` on top of rustc's default
//!   static-pie yields a binary that asks for the glibc loader and crashes at start.
//! - In release builds (dynamic, and the static one of the images), the code that starts the agent
//!   and serves `/metrics` (`link/hot-text.txt`, recorded by `link/record.sh`) is placed
//!   together, so fewer of the 64 KB runs the kernel maps around each used page hold it
//!   (about 3 MB of RSS). GNU ld of Debian 12 cannot order
//!   sections, so these builds link with gold (`--section-ordering-file`); without `ld.gold`
//!   the build warns and links as before.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_CFG_TARGET_FEATURE");
    println!("cargo:rerun-if-changed=link/hot-text.txt");
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let static_build = features.split(',').any(|f| f == "crt-static");
    if !static_build {
        println!("cargo:rustc-link-arg-bin=driftless=-no-pie");
    }
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if !(release && linux) {
        return;
    }
    let gold = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("ld.gold").is_file()));
    if !gold {
        println!(
            "cargo:warning=ld.gold not found: the driftless binary's code is not ordered \
             (install binutils' gold for the smaller resident size)"
        );
        return;
    }
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = Path::new(&dir).join("link/hot-text.txt");
    println!("cargo:rustc-link-arg-bin=driftless=-fuse-ld=gold");
    println!(
        "cargo:rustc-link-arg-bin=driftless=-Wl,--section-ordering-file={}",
        order.display()
    );
}
