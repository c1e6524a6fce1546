//! Writes the CRD YAML (plain and the Helm chart's copy) from the Rust types.
//! Run from the repository root: `cargo run --bin crdgen`.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    for (path, content) in nuclia_token_operator::crds::generated_files() {
        let path = Path::new(&path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, content)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
