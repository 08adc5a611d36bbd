//! `ndctl ca` and `ndctl genesis` end to end: issued certificates pass `openssl verify`, and the
//! genesis the CLI writes is accepted by the app's parser.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::process::Command;

fn ndctl(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ndctl"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ndctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn openssl_verify(ca: &Path, cert: &Path) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify {}: {}{}",
        cert.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn issued_member_certificates_pass_openssl_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("acme");
    let ca = ca_dir.to_str().unwrap();
    ndctl(&[
        "ca",
        "init",
        "--org",
        "acme",
        "--name",
        "Acme Labs",
        "--dir",
        ca,
    ]);
    let out = ndctl(&[
        "ca", "issue", "--ca-dir", ca, "--name", "alice", "--role", "buyer",
    ]);
    assert!(out.contains("issued buyer certificate"), "{out}");
    openssl_verify(&ca_dir.join("ca.pem"), &ca_dir.join("alice.pem"));
    let shown = ndctl(&["keys", "show", ca_dir.join("alice.pem").to_str().unwrap()]);
    assert!(shown.contains("role buyer"), "{shown}");
}

#[test]
fn unknown_role_and_bad_org_id_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("x");
    let bad = Command::new(env!("CARGO_BIN_EXE_ndctl"))
        .args([
            "ca",
            "init",
            "--org",
            "Bad Id",
            "--name",
            "X",
            "--dir",
            ca.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    ndctl(&[
        "ca",
        "init",
        "--org",
        "okorg",
        "--name",
        "X",
        "--dir",
        ca.to_str().unwrap(),
    ]);
    let bad = Command::new(env!("CARGO_BIN_EXE_ndctl"))
        .args([
            "ca",
            "issue",
            "--ca-dir",
            ca.to_str().unwrap(),
            "--name",
            "m",
            "--role",
            "root",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown role"));
}

#[test]
fn dev_consortium_and_genesis_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    ndctl(&["ca", "dev-consortium", "--dir", root]);
    let mut args = vec!["genesis".to_string()];
    for org in ["medlab", "healthtech", "datacorp"] {
        let org_dir = dir.path().join(org);
        for role in ["admin", "provider", "buyer", "trainer", "validator"] {
            openssl_verify(
                &org_dir.join("ca.pem"),
                &org_dir.join(format!("{role}.pem")),
            );
        }
        args.push("--org".into());
        args.push(format!("{org}={}", org_dir.join("ca.pem").display()));
        args.push("--alloc".into());
        args.push(format!("{}=1000", org_dir.join("buyer.pem").display()));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let json = ndctl(&refs);
    let app_state: neurodata_abci::genesis::AppState = serde_json::from_str(&json).unwrap();
    assert_eq!(app_state.orgs.len(), 3);
    assert_eq!(app_state.allocations.len(), 3);
}
