//! Writes the CRDs generated from the API types to `deploy/crds/`.

fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::remove_file(path)?;
        }
    }
    for (name, yaml) in lifeboat_server::api::crd_files() {
        std::fs::write(dir.join(&name), yaml)?;
        println!("wrote deploy/crds/{name}");
    }
    Ok(())
}
