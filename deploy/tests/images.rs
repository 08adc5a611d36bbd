//! The container images (`deploy/images/*.Dockerfile`), parsed and held to the rules of
//! `neurodata_deploy::dockerfile` against the real workspace: the packages and binaries they
//! build exist, CometBFT is the version `tools/go.mod` pins, the Rust builder is the workspace's
//! `rust-version`, and the build context leaves out what it must.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use neurodata_deploy::dockerfile::{Command, Dockerfile, InstructionKind, Workspace};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy/ lies in the workspace root")
        .to_owned()
}

/// Every image, by file stem (`abci` for `abci.Dockerfile`).
fn images() -> BTreeMap<String, Dockerfile> {
    let dir = root().join("deploy/images");
    let mut images = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/images is readable") {
        let path = entry.expect("a directory entry").path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".Dockerfile"))
        else {
            continue;
        };
        let dockerfile = Dockerfile::parse_file(&path).unwrap_or_else(|e| panic!("{e}"));
        images.insert(stem.to_owned(), dockerfile);
    }
    images
}

fn workspace_manifest() -> toml::Table {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    toml::from_str(&text).expect("Cargo.toml is TOML")
}

fn workspace_package_field(field: &str) -> String {
    workspace_manifest()["workspace"]["package"][field]
        .as_str()
        .unwrap_or_else(|| panic!("workspace.package.{field}"))
        .to_owned()
}

/// The shell text of every RUN in a stage.
fn runs(dockerfile: &Dockerfile, stage: usize) -> Vec<String> {
    dockerfile.stages[stage]
        .instructions
        .iter()
        .filter_map(|i| match &i.kind {
            InstructionKind::Run { command, .. } => Some(match command {
                Command::Shell(text) => text.clone(),
                Command::Exec(words) => words.join(" "),
            }),
            _ => None,
        })
        .collect()
}

#[test]
fn every_image_passes_the_dockerfile_rules_against_the_workspace() {
    let workspace = Workspace::load(&root()).expect("the workspace's manifests load");
    let images = images();
    assert!(!images.is_empty(), "no deploy/images/*.Dockerfile");
    let problems: Vec<String> = images
        .values()
        .flat_map(|d| d.check(&workspace))
        .map(|e| e.to_string())
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_images_ship_the_abci_app_gateway_worker_with_trainer_and_cometbft() {
    let images = images();
    for (image, files) in [
        ("abci", &["/usr/local/bin/neurodata-abci"][..]),
        ("gateway", &["/usr/local/bin/neurodata-gateway"]),
        // A run pod's `neurodata-worker pod-run` execs `trainer`: both in one image.
        (
            "worker",
            &["/usr/local/bin/neurodata-worker", "/usr/local/bin/trainer"],
        ),
        ("cometbft", &["/usr/local/bin/cometbft"]),
    ] {
        let dockerfile = images
            .get(image)
            .unwrap_or_else(|| panic!("deploy/images/{image}.Dockerfile is missing"));
        let shipped = dockerfile.shipped_files();
        for file in files {
            assert!(
                shipped.iter().any(|s| s == file),
                "{image} ships {shipped:?}, not {file}"
            );
        }
    }
}

#[test]
fn the_cometbft_image_builds_the_version_tools_go_mod_pins_as_the_script_does() {
    let go_mod = std::fs::read_to_string(root().join("tools/go.mod")).expect("tools/go.mod");
    let pinned = go_mod
        .lines()
        .map(|l| l.trim().trim_start_matches("require").trim())
        .find_map(|l| l.strip_prefix("github.com/cometbft/cometbft "))
        .map(|v| v.split_whitespace().next().unwrap_or_default().to_owned())
        .expect("tools/go.mod requires github.com/cometbft/cometbft");
    let images = images();
    let cometbft = images.get("cometbft").expect("cometbft.Dockerfile");
    assert_eq!(
        cometbft.global_arg("COMETBFT_VERSION"),
        Some(pinned.as_str()),
        "the Dockerfile's COMETBFT_VERSION must be tools/go.mod's"
    );
    assert_eq!(
        cometbft.label("org.opencontainers.image.version"),
        Some(pinned.clone()),
        "the image's version label"
    );

    // Built from the go.mod/go.sum that pin it, with the script's flags.
    let build = cometbft.stages.len() - 2;
    let copies: Vec<&String> = cometbft.stages[build]
        .instructions
        .iter()
        .filter_map(|i| match &i.kind {
            InstructionKind::Copy { sources, .. } => Some(sources),
            _ => None,
        })
        .flatten()
        .collect();
    for file in ["tools/go.mod", "tools/go.sum"] {
        assert!(
            copies.iter().any(|c| *c == file),
            "the build stage copies {file}"
        );
    }
    let script =
        std::fs::read_to_string(root().join("scripts/build-cometbft.sh")).expect("the script");
    let runs = runs(cometbft, build).join("\n");
    for flags in [
        "CGO_ENABLED=0 go build -trimpath",
        "github.com/cometbft/cometbft/cmd/cometbft",
    ] {
        assert!(script.contains(flags), "scripts/build-cometbft.sh: {flags}");
        assert!(
            runs.contains(flags),
            "cometbft.Dockerfile builds with {flags}"
        );
    }
    // The build itself refuses a go.mod that disagrees with the ARG.
    assert!(
        runs.contains(
            "go list -m -f '{{.Version}}' github.com/cometbft/cometbft)\" = \"$COMETBFT_VERSION\""
        ),
        "the build stage compares go.mod's version with COMETBFT_VERSION"
    );
}

#[test]
fn rust_builders_are_the_workspace_rust_version_with_the_build_packages() {
    let rust_version = workspace_package_field("rust-version");
    let install_deps =
        std::fs::read_to_string(root().join("scripts/install-deps.sh")).expect("install-deps.sh");
    for (image, dockerfile) in images() {
        for (index, stage) in dockerfile.stages.iter().enumerate() {
            if dockerfile.cargo_builds(index).is_empty() {
                continue;
            }
            let tag = stage
                .resolved_image
                .strip_prefix("rust:")
                .unwrap_or_else(|| panic!("{image}: cargo builds in {}", stage.resolved_image));
            assert!(
                tag == rust_version
                    || tag.starts_with(&format!("{rust_version}."))
                    || tag.starts_with(&format!("{rust_version}-")),
                "{image}: rust:{tag} is not the workspace's rust-version {rust_version}"
            );
            let runs = runs(&dockerfile, index).join("\n");
            for package in ["clang", "libclang-dev", "libssl-dev", "pkg-config"] {
                assert!(
                    install_deps.contains(package),
                    "install-deps.sh no longer installs {package}: update the images"
                );
                assert!(runs.contains(package), "{image} does not install {package}");
            }
        }
    }
}

#[test]
fn every_image_carries_the_oci_labels() {
    let license = workspace_package_field("license");
    for (image, dockerfile) in images() {
        for key in [
            "org.opencontainers.image.source",
            "org.opencontainers.image.title",
            "org.opencontainers.image.licenses",
        ] {
            assert!(dockerfile.label(key).is_some(), "{image}: no label {key}");
        }
        assert_eq!(
            dockerfile.label("org.opencontainers.image.licenses"),
            Some(license.clone()),
            "{image}: the licence is the workspace's"
        );
    }
}

#[test]
fn the_build_context_leaves_out_target_and_git_but_keeps_what_builds() {
    let text = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/'))
        .collect();
    for excluded in ["target", ".git"] {
        assert!(
            patterns.contains(&excluded),
            ".dockerignore does not exclude {excluded}/ ({patterns:?})"
        );
    }
    for needed in ["Cargo.lock", "Cargo.toml", "tools", "proto", "*", "**"] {
        assert!(
            !patterns.contains(&needed),
            ".dockerignore excludes {needed}, which the images build from"
        );
    }
}
