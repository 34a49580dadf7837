//! Writes the generated CRD YAML and field reference into the repository.
//!
//! Run from the repository root (`make crds`); `crds/tests/generated.rs` fails when the
//! checked-in files differ from what this would write.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (path, content) in driftless_crds::generate::files() {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, content)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
