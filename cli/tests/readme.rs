//! End-to-end: the README's "First five minutes as a member" runs as written against a fresh
//! devnet (so it cannot drift), and on that network the mistakes a new member makes get the
//! message a user should see: what is wrong and what to do, in one line.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;

/// The lines of the README block between the first-five-minutes markers.
fn readme_lines() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find("<!-- first-five-minutes -->")
        .expect("the README has the first-five-minutes section");
    let end = readme[start..]
        .find("<!-- /first-five-minutes -->")
        .expect("the section is closed")
        + start;
    readme[start..end]
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(str::to_owned)
        .collect()
}

/// A shell in `dir` with `ndctl` on the PATH and nothing of the caller's NeuroData settings.
fn shell(dir: &Path) -> Command {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ndctl"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("bash");
    c.current_dir(dir)
        .env("PATH", path)
        .env("NEURODATA_TRUST_DIR", dir.join("trusted"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NEURODATA_") && k != "NEURODATA_COMETBFT" {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `script`; (success, stdout + stderr).
fn run(dir: &Path, script: &str) -> (bool, String) {
    let out = shell(dir)
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The environment of `org`'s `role` member at its org's gateway (as the README sets it).
fn member(org: &str, role: &str) -> String {
    let port = match org {
        "medlab" => 26608,
        "healthtech" => 26618,
        _ => 26628,
    };
    format!(
        "export NEURODATA_GATEWAY=https://127.0.0.1:{port} \
         NEURODATA_GATEWAY_CA=devnet/consortium/{org}/ca.pem \
         NEURODATA_CERT=devnet/consortium/{org}/{role}.pem \
         NEURODATA_KEY=devnet/consortium/{org}/{role}.key\n"
    )
}

/// Runs `script` as `org`'s `role` and expects it to fail with a message containing every one
/// of `want`, in at most two lines, without transport or debug noise.
fn refused(dir: &Path, as_member: &str, script: &str, want: &[&str]) -> String {
    let (ok, out) = run(dir, &format!("{as_member}{script}"));
    assert!(!ok, "{script} succeeded:\n{out}");
    for w in want {
        assert!(out.contains(w), "{script}: {w:?} not in:\n{out}");
    }
    for noise in ["Location:", "Caused by", "transport error", "flex-error"] {
        assert!(!out.contains(noise), "{script}: {noise:?} in:\n{out}");
    }
    assert!(
        out.trim().lines().count() <= 2,
        "{script}: more than two lines:\n{out}"
    );
    out
}

/// Waits until `as_member`'s node has dataset `id`: its node may be a block behind the one that
/// committed the listing.
fn seen(dir: &Path, as_member: &str, id: u64) {
    for _ in 0..20 {
        if run(
            dir,
            &format!("{as_member}ndctl dataset show --dataset {id}"),
        )
        .0
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("dataset {id} never reached the member's node");
}

struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = shell(&self.0).arg("-c").arg("ndctl devnet down").output();
    }
}

#[test]
fn a_members_first_five_minutes_run_as_written_and_mistakes_say_what_to_do() {
    let dir = tempfile::Builder::new()
        .prefix("ndrm")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = dir.path();
    let lines = readme_lines();
    assert!(
        lines.first().is_some_and(|l| l.contains("devnet up"))
            && lines.last().is_some_and(|l| l.contains("devnet down")),
        "the section starts a network and stops it: {lines:?}"
    );
    let _down = Down(dir.to_owned());
    // Every line but the last (which stops the network), as one shell session.
    let (ok, out) = run(dir, &lines[..lines.len() - 1].join("\n"));
    assert!(ok, "the README's first five minutes failed:\n{out}");
    assert!(out.contains("balance"), "{out}");
    assert!(out.contains("committed tx"), "{out}");
    // 1. `devnet up` says how to reach it, and the default --node is its first node.
    assert!(
        out.contains("export NEURODATA_NODE=http://127.0.0.1:26607"),
        "{out}"
    );
    let (_, help) = run(dir, "ndctl query --help");
    assert!(help.contains("[default: http://127.0.0.1:26607]"), "{help}");
    // 10. Dates, not unix seconds; plain status names.
    assert!(
        out.contains("(UTC)") && !out.contains("unix seconds"),
        "{out}"
    );
    assert!(
        out.contains("active ca") && !out.contains("ORG_STATUS"),
        "{out}"
    );
    // 7. One unit in help, input and output.
    let (_, help) = run(dir, "ndctl tx transfer --help");
    assert!(
        help.contains("whole NRC") && !help.contains("base units"),
        "{help}"
    );

    let buyer = member("healthtech", "buyer");
    let provider = member("medlab", "provider");
    let stranger = member("datacorp", "buyer");

    // 1. An unreachable node: one line, and what to do.
    refused(
        dir,
        "",
        "ndctl query orgs --node http://127.0.0.1:1",
        &[
            "cannot reach the node at http://127.0.0.1:1 (connection refused)",
            "pass --node URL or set NEURODATA_NODE",
        ],
    );

    // 3. Files that do not fit are refused before anything is encrypted.
    std::fs::write(dir.join("ok.csv"), "age,chol\n40,200\n41,210\n").unwrap();
    std::fs::write(dir.join("typed.csv"), "age,chol\n40,200\nold,210\n").unwrap();
    std::fs::write(dir.join("header.csv"), "age,chol\n").unwrap();
    std::fs::write(dir.join("quote.csv"), "age,chol\n40,\"200\n").unwrap();
    refused(
        dir,
        &provider,
        "ndctl dataset upload --file typed.csv --title t --price 5 --schema age:int,chol:int",
        &["line 3", "age"],
    );
    refused(
        dir,
        &provider,
        "ndctl dataset upload --file header.csv --title t --price 5",
        &["no data rows"],
    );
    refused(
        dir,
        &provider,
        "ndctl dataset upload --file quote.csv --title t --price 5",
        &["quote"],
    );

    // 7. Whole NRC only; a buy shows the price and the fee against the balance.
    refused(
        dir,
        &buyer,
        "ndctl tx transfer --to devnet/consortium/medlab/provider.pem --amount 1.5",
        &["NRC has no fractions"],
    );
    let (ok, out) = run(
        dir,
        &format!(
            "{provider}ndctl dataset upload --file ok.csv --title cheap --price 5\n\
             ndctl dataset upload --file ok.csv --title dear --price 1000000000000000"
        ),
    );
    assert!(ok && out.contains("listed dataset 2"), "{out}");
    seen(dir, &buyer, 2);
    refused(
        dir,
        &buyer,
        "ndctl dataset buy --dataset 2",
        &["costs 1000000000000000 NRC plus the 1 NRC fee; your balance is"],
    );

    // Previews (issue 16): drawn on chain, each row proven against the listing's rows root.
    let (ok, out) = run(
        dir,
        &format!(
            "{provider}ndctl dataset upload --file ok.csv --title shown --price 5 --preview-rows 2"
        ),
    );
    assert!(ok && out.contains("listed dataset 3"), "{out}");
    seen(dir, &buyer, 3);
    let (ok, out) = run(dir, &format!("{buyer}ndctl dataset preview --dataset 3"));
    assert!(
        ok && out.contains("2 of 2 rows") && out.contains("40,200") && out.contains("41,210"),
        "{out}"
    );
    refused(
        dir,
        &buyer,
        "ndctl dataset preview --dataset 1",
        &["dataset 1 offers no previews"],
    );

    // A delisted dataset nobody holds a purchase of leaves medlab's blob store.
    let (_, shown) = run(dir, &format!("{provider}ndctl dataset show --dataset 2"));
    let cid = shown
        .split("cid ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_owned();
    let blob = dir.join("devnet/node0/blobs/blobs").join(&cid);
    assert!(blob.exists(), "{}", blob.display());
    let (ok, out) = run(dir, &format!("{provider}ndctl dataset delist --dataset 2"));
    assert!(ok && out.contains("delisted dataset 2"), "{out}");
    for _ in 0..40 {
        if !blob.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(!blob.exists(), "the delisted ciphertext is still stored");

    // 2. Somebody else's purchase is not yours (and is no reason to accuse the provider).
    let (ok, out) = run(dir, &format!("{stranger}ndctl dataset buy --dataset 1"));
    assert!(ok && out.contains("purchase 1 of dataset 1"), "{out}");
    // healthtech's node may be a block behind datacorp's: until it has the purchase, it
    // proves it absent.
    for _ in 0..20 {
        let (_, out) = run(dir, &format!("{buyer}ndctl dataset purchases --org medlab"));
        if out.contains("purchase 1 of dataset 1") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let out = refused(
        dir,
        &buyer,
        "ndctl dataset download --purchase 1 --out mine.csv",
        &["purchase 1 is not yours"],
    );
    assert!(!out.contains("dispute"), "{out}");

    // 10. An existing --out is not overwritten without --force; counts read as English.
    std::fs::write(dir.join("taken.csv"), "mine").unwrap();
    refused(
        dir,
        &stranger,
        "ndctl dataset download --purchase 1 --out taken.csv",
        &["taken.csv exists: pass --force"],
    );
    assert_eq!(std::fs::read(dir.join("taken.csv")).unwrap(), b"mine");
    let (ok, out) = run(dir, &format!("{buyer}ndctl dataset stats --dataset 1"));
    assert!(ok && out.contains("1 purchase,"), "{out}");
    let (ok, out) = run(dir, &format!("{buyer}ndctl dataset list --org nobody"));
    assert!(ok && out.contains("no datasets match"), "{out}");

    // 4. Coins to an address nobody has signed with are refused unless asked for.
    let nobody = "ab".repeat(32);
    refused(
        dir,
        &buyer,
        &format!("ndctl tx transfer --to {nobody} --amount 1"),
        &["no member has signed with address", "--allow-unregistered"],
    );
    let (ok, out) = run(
        dir,
        &format!("{buyer}ndctl tx transfer --to {nobody} --amount 1 --allow-unregistered"),
    );
    assert!(ok && out.contains("committed tx"), "{out}");

    // A CA certificate cannot sign: coins sent to its fingerprint would be lost.
    refused(
        dir,
        &buyer,
        "ndctl tx transfer --to devnet/consortium/medlab/ca.pem --amount 1",
        &["is not a member certificate"],
    );

    // 6. One flag scheme: identity flags anywhere, read-only commands without --fee.
    let (ok, out) = run(
        dir,
        "ndctl dataset list --cert devnet/consortium/healthtech/buyer.pem \
         --key devnet/consortium/healthtech/buyer.key \
         --gateway https://127.0.0.1:26618 --gateway-ca devnet/consortium/healthtech/ca.pem",
    );
    assert!(ok && out.contains("dataset 1"), "{out}");
    let (ok, out) = run(dir, &format!("{buyer}ndctl dataset list --fee 1"));
    assert!(!ok && out.contains("--fee"), "{out}");

    // 5. A key that is not the certificate's says so, through the node as through a gateway.
    refused(
        dir,
        "",
        "ndctl tx transfer --cert devnet/consortium/healthtech/buyer.pem \
         --key devnet/consortium/healthtech/provider.key \
         --to devnet/consortium/medlab/provider.pem --amount 1",
        &["the key in devnet/consortium/healthtech/provider.key is not the key of certificate"],
    );

    // The README's last line stops the network.
    let (ok, out) = run(dir, lines.last().unwrap());
    assert!(ok && out.contains("stopped"), "{out}");
}
