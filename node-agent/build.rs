//! Links the `driftless` binary as a position-dependent executable: the dynamic loader then has
//! no relocation table to apply to the binary's read-only data at start, which keeps those pages
//! shared with the page cache instead of copied into each agent (about 1 MB of RSS; see
//! docs/facts.md, Performance, and docs/decisions.md).
fn main() {
    println!("cargo:rustc-link-arg-bin=driftless=-no-pie");
}
