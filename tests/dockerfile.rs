//! The Dockerfile's build stage without Docker: what it copies before its first `cargo build` is
//! enough for cargo to read the workspace (a workspace member the image did not copy once broke
//! every image build). The stubs the stage writes (`src/main.rs`, `src/lib.rs`, and the members'
//! `src/lib.rs`) are written here the same way.

use std::path::Path;
use std::process::Command;

fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn the_dependency_layer_of_the_dockerfile_reads_the_workspace() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut manifests = Vec::new();
    for line in dockerfile.lines() {
        if line.contains("cargo build") {
            break;
        }
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (sources, target) = words.split_at(words.len() - 1);
        for source in sources {
            let to = if target[0].ends_with('/') {
                scratch.path().join(target[0]).join(source)
            } else {
                scratch.path().join(target[0])
            };
            copy(&repo.join(source), &to);
            if source.ends_with("Cargo.toml") {
                manifests.push(to);
            }
        }
    }
    assert!(!manifests.is_empty(), "the build stage copies Cargo.toml");
    for manifest in &manifests {
        let src = manifest.parent().unwrap().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("lib.rs"), "").unwrap();
        std::fs::write(src.join("main.rs"), "fn main() {}").unwrap();
    }
    let metadata = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(scratch.path())
        .output()
        .unwrap();
    assert!(
        metadata.status.success(),
        "cargo cannot read the workspace from what the Dockerfile copies:\n{}",
        String::from_utf8_lossy(&metadata.stderr)
    );
}
