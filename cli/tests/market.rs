//! The marketplace end to end on a real devnet (CometBFT + app + the medlab gateway), driven the
//! way members drive it: `ndctl dataset …` commands, and the client library for the paths a
//! well-behaved CLI never takes (a wrong key delivered, a listing without its blob).
//!
//! Covers: upload → buy → automatic key delivery (the key deposited with its CID, delivered for
//! its depositor's listing) → download → decrypt → verify → confirm with balances; downloads
//! refused to non-buyers; uploads refused to other orgs' members; a listing whose ciphertext is
//! not in the gateway's store; a purchase made while the provider's gateway is down is delivered
//! after its restart, exactly once, and a second restart delivers nothing more; a wrong key
//! proven on chain and refunded; a validator's key request not answered under the gateway's
//! default policy; a JSON array listed with `--format json` (its format, rows root and previews
//! on chain and in `list`/`show`), bought and downloaded with its rows checked against the root,
//! and a malformed one refused before anything is uploaded.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{DevnetDir, ndctl};
use neurodata_abci::query;
use neurodata_client::gateway::{GatewayClient, GatewayTls};
use neurodata_client::{Amount, ClientError, LightClient, NodeClient, Signer, msg, submit};
use neurodata_proto::chain::v1 as pb;

const BASE_PORT: u16 = 27900;

struct Net {
    dir: DevnetDir,
    spec: serde_json::Value,
    light: LightClient,
}

impl Net {
    fn up() -> Net {
        let dir = DevnetDir::new("ndmk");
        start(dir.path());
        let spec = dir.json("devnet.json");
        let light = common::light(dir.path());
        Net { dir, spec, light }
    }

    fn url(&self) -> String {
        self.spec["nodes"][0]["gateway"]["url"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn rpc(&self) -> String {
        self.spec["nodes"][0]["rpc"].as_str().unwrap().to_owned()
    }

    fn org_dir(&self, org: &str) -> PathBuf {
        self.dir.path().join("consortium").join(org)
    }

    /// `ndctl dataset` flags for a member, through the medlab gateway.
    fn as_member(&self, org: &str, role: &str) -> Vec<String> {
        let o = self.org_dir(org);
        vec![
            "--signer-cert".into(),
            o.join(format!("{role}.pem")).display().to_string(),
            "--signer-key".into(),
            o.join(format!("{role}.key")).display().to_string(),
            "--gateway".into(),
            self.url(),
            "--gateway-ca".into(),
            self.org_dir("medlab").join("ca.pem").display().to_string(),
        ]
    }

    fn dataset(&self, sub: &str, org: &str, role: &str, extra: &[&str]) -> Result<String, String> {
        let mut args = vec!["dataset".to_owned(), sub.to_owned()];
        args.extend(self.as_member(org, role));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ndctl(self.dir.path(), &refs)
    }

    async fn client(&self, org: &str, role: &str) -> GatewayClient {
        let o = self.org_dir(org);
        let tls = GatewayTls::from_files(
            &self.org_dir("medlab").join("ca.pem"),
            &o.join(format!("{role}.pem")),
            &o.join(format!("{role}.key")),
        )
        .unwrap();
        GatewayClient::connect(&self.url(), Some(tls))
            .await
            .unwrap()
    }

    fn signer(&self, org: &str, role: &str) -> Signer {
        Signer::load(&self.org_dir(org), role).unwrap()
    }

    fn gateway_pid(&self) -> i32 {
        self.dir.json("pids.json")["gateways"][0][1]
            .as_i64()
            .unwrap() as i32
    }

    fn kill_gateway(&self) {
        let pid = self.gateway_pid().to_string();
        assert!(
            Command::new("kill")
                .args(["-9", &pid])
                .status()
                .unwrap()
                .success()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    /// `devnet up` on an existing network starts what is not running: here, the gateway.
    fn restart_gateway(&self) {
        start(self.dir.path());
    }
}

/// One validator with the founding orgs' gateways (medlab's runs next to node0); on an existing
/// network, starts what is not running.
fn start(dir: &Path) {
    let base = BASE_PORT.to_string();
    ndctl(
        dir,
        &[
            "devnet",
            "up",
            "--validators",
            "1",
            "--gateways",
            "--base-port",
            &base,
        ],
    )
    .unwrap_or_else(|e| panic!("devnet up failed: {e}"));
}

fn csv(path: &Path, rows: usize) {
    let mut s = String::from("age,sex,chol,target\n");
    for i in 0..rows {
        s.push_str(&format!(
            "{},{},{}.5,{}\n",
            30 + i % 50,
            ["F", "M"][i % 2],
            180 + i % 90,
            i % 2
        ));
    }
    std::fs::write(path, s).unwrap();
}

/// The rows of [`csv`] as a JSON array of objects, one per line.
fn json_array(path: &Path, rows: usize) {
    let objects: Vec<String> = (0..rows)
        .map(|i| {
            format!(
                "  {{\"age\": {}, \"sex\": \"{}\", \"chol\": {}.5, \"target\": {}}}",
                30 + i % 50,
                ["F", "M"][i % 2],
                180 + i % 90,
                i % 2
            )
        })
        .collect();
    std::fs::write(path, format!("[\n{}\n]\n", objects.join(",\n"))).unwrap();
}

fn gateway_code(e: &ClientError) -> String {
    match e {
        ClientError::Gateway { code, .. } => code.clone(),
        other => format!("not a gateway status: {other}"),
    }
}

async fn balance(net: &Net, node: &NodeClient, signer: &Signer) -> u128 {
    common::account(&net.light, node, signer.address())
        .await
        .balance
        .parse()
        .unwrap()
}

async fn nonce(net: &Net, node: &NodeClient, signer: &Signer) -> u64 {
    common::account(&net.light, node, signer.address())
        .await
        .nonce
}

async fn purchase(net: &Net, c: &GatewayClient, id: u64) -> pb::Purchase {
    net.light
        .record(c, query::purchase(id))
        .await
        .unwrap()
        .unwrap()
}

async fn wait_status(
    net: &Net,
    c: &GatewayClient,
    id: u64,
    want: pb::PurchaseStatus,
) -> pb::Purchase {
    // Generous: on a loaded 2-core machine a delivery can take several blocks.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = purchase(net, c, id).await;
        if p.status == want as i32 {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "purchase {id} stuck at {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_are_sold_delivered_verified_and_disputed_through_real_gateways() {
    let net = Net::up();
    let work = net.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let file = work.join("heart.csv");
    csv(&file, 2_000);
    let plain = std::fs::read(&file).unwrap();

    // Upload and list (medlab's provider, through medlab's gateway).
    let out = net
        .dataset(
            "upload",
            "medlab",
            "provider",
            &[
                "--file",
                file.to_str().unwrap(),
                "--title",
                "heart",
                "--price",
                "5000",
            ],
        )
        .unwrap();
    assert!(
        out.contains("listed dataset 1") && out.contains("2000 rows"),
        "{out}"
    );
    let medlab = net.client("medlab", "admin").await;
    let d: pb::Dataset = net
        .light
        .record(&medlab, query::dataset(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.rows, 2000);
    assert_eq!(d.plaintext_sha256, openssl::sha::sha256(&plain).to_vec());

    // Nobody outside medlab without a purchase may fetch the ciphertext.
    let outsider = net.client("datacorp", "buyer").await;
    let err = outsider
        .download(&d.cid, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(gateway_code(&err), "PermissionDenied", "{err}");

    // A listing whose ciphertext the gateway does not hold is refused before it is broadcast.
    let provider = net.signer("medlab", "provider");
    let mut missing = pb::RegisterDataset {
        cid: neurodata_client::cid::Cid::from_digest([7; 32]).to_string(),
        plaintext_sha256: vec![1; 32],
        key_commitment: vec![2; 32],
        size: 10,
        ciphertext_size: 56,
        rows: 1,
        schema: d.schema.clone(),
        price: "1".into(),
        license: "x".into(),
        title: "ghost".into(),
        location: String::new(),
        ..Default::default()
    };
    let provider_gw = net.client("medlab", "provider").await;
    let err = submit(
        &provider_gw,
        &provider,
        Amount(1),
        vec![msg::register_dataset(missing.clone())],
    )
    .await
    .unwrap_err();
    assert_eq!(gateway_code(&err), "FailedPrecondition", "{err}");
    assert!(err.to_string().contains("upload the ciphertext"), "{err}");

    // healthtech buys while medlab's gateway is down (straight to the node): nothing can
    // deliver the key until the gateway is back.
    net.kill_gateway();
    let buyer = net.signer("healthtech", "buyer");
    let node = NodeClient::new(&net.rpc()).unwrap();
    let provider_nonce = nonce(&net, &node, &provider).await;
    submit(&node, &buyer, Amount(1), vec![msg::buy(1, Amount(5000))])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    net.restart_gateway();
    let medlab = net.client("medlab", "admin").await;
    let p = wait_status(&net, &medlab, 1, pb::PurchaseStatus::KeyDelivered).await;
    assert_eq!(p.delivered_by, provider.address().0.to_vec());
    assert_eq!(nonce(&net, &node, &provider).await, provider_nonce + 1);
    // Another restart: the purchase is no longer waiting, nothing is sent again.
    net.kill_gateway();
    net.restart_gateway();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        nonce(&net, &node, &provider).await,
        provider_nonce + 1,
        "the key was delivered exactly once"
    );

    // Download, decrypt, verify, confirm.
    let before = balance(&net, &node, &provider).await;
    let got = work.join("bought.csv");
    let out = net
        .dataset(
            "download",
            "healthtech",
            "buyer",
            &[
                "--purchase",
                "1",
                "--out",
                got.to_str().unwrap(),
                "--confirm",
            ],
        )
        .unwrap();
    assert!(
        out.contains("matches the listing") && out.contains("confirmed purchase 1"),
        "{out}"
    );
    assert_eq!(std::fs::read(&got).unwrap(), plain);
    let after = balance(&net, &node, &provider).await;
    assert_eq!(
        after - before,
        5000 - 100,
        "the provider got the price minus the 2% fee"
    );
    // The buyer may download again; a second purchase is refused with the chain's reason.
    net.client("healthtech", "buyer")
        .await
        .download(&d.cid, &mut Vec::new())
        .await
        .unwrap();
    let err = net
        .dataset("buy", "healthtech", "buyer", &["--dataset", "1"])
        .unwrap_err();
    assert!(err.contains("already bought dataset 1"), "{err}");
    let stats = net
        .dataset("stats", "medlab", "provider", &["--dataset", "1"])
        .unwrap();
    assert!(
        stats.contains("1 purchase, 1 paid") && stats.contains("revenue 4900"),
        "{stats}"
    );

    // datacorp has no gateway here, and medlab's stores uploads of medlab's members only. So
    // datacorp's provider lists straight on chain (its ciphertext would be on its own gateway)
    // and, playing dishonest, delivers a wrong key itself. The buyer's download refuses it
    // before fetching anything, and the dispute refunds the buyer on chain.
    let dc = net.client("datacorp", "provider").await;
    let key = neurodata_crypto::DataKey::generate().unwrap();
    let mut sealed = Vec::new();
    let (sha, size) =
        neurodata_crypto::stream::encrypt(plain.as_slice(), &mut sealed, &key, 65536).unwrap();
    let err = dc
        .upload(std::io::Cursor::new(sealed.clone()))
        .await
        .unwrap_err();
    assert_eq!(gateway_code(&err), "PermissionDenied", "{err}");
    missing.cid = neurodata_client::cid::Cid::of(&sealed).to_string();
    missing.plaintext_sha256 = sha.to_vec();
    missing.key_commitment = key.commitment().to_vec();
    missing.size = size;
    missing.ciphertext_size = sealed.len() as u64;
    missing.title = "datacorp heart".into();
    missing.price = "5000".into();
    let dc_signer = net.signer("datacorp", "provider");
    submit(
        &node,
        &dc_signer,
        Amount(1),
        vec![msg::register_dataset(missing)],
    )
    .await
    .unwrap();
    net.dataset("buy", "healthtech", "buyer", &["--dataset", "2"])
        .unwrap();
    let buyer_spki = openssl::x509::X509::from_pem(
        &std::fs::read(net.org_dir("healthtech").join("buyer.pem")).unwrap(),
    )
    .unwrap()
    .public_key()
    .unwrap()
    .public_key_to_der()
    .unwrap();
    let wrong =
        neurodata_crypto::wrap::wrap(&neurodata_crypto::DataKey::generate().unwrap(), &buyer_spki)
            .unwrap();
    submit(
        &dc,
        &dc_signer,
        Amount(1),
        vec![msg::deliver_key(
            2,
            net.signer("healthtech", "buyer").address(),
            wrong.to_bytes(),
        )],
    )
    .await
    .unwrap();
    let err = net
        .dataset(
            "download",
            "healthtech",
            "buyer",
            &[
                "--purchase",
                "2",
                "--out",
                work.join("bad.csv").to_str().unwrap(),
            ],
        )
        .unwrap_err();
    assert!(
        err.contains("does not match") && err.contains("dispute"),
        "{err}"
    );
    assert!(!work.join("bad.csv").exists());
    let buyer_before = balance(&net, &node, &buyer).await;
    let out = net
        .dataset("dispute", "healthtech", "buyer", &["--purchase", "2"])
        .unwrap();
    assert!(out.contains("dispute upheld"), "{out}");
    let p = purchase(&net, &medlab, 2).await;
    assert_eq!(p.status, pb::PurchaseStatus::WrongKeyRefunded as i32);
    // Verified reads trail the tip by a block (the proof needs the next header): poll.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = balance(&net, &node, &buyer).await;
        if now == buyer_before + 5000 - 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "buyer balance {now}, expected the price back minus the dispute's tx fee"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // medlab's validator (the registered operator of node0) asks for dataset 1's key to
    // validate it: a no-money key request, which medlab's gateway does not answer under its
    // default policy (deliver_validation_keys = false). A sale opened after it is delivered, so
    // the delivery task has considered the request (in id order) and skipped it, logging once.
    let validator = net.signer("medlab", "validator");
    submit(
        &node,
        &validator,
        Amount(1),
        vec![msg::request_validation(1)],
    )
    .await
    .unwrap();
    let request = purchase(&net, &medlab, 3).await;
    assert_eq!(request.kind, pb::PurchaseKind::Validation as i32);
    submit(
        &node,
        &net.signer("datacorp", "buyer"),
        Amount(1),
        vec![msg::buy(1, Amount(5000))],
    )
    .await
    .unwrap();
    wait_status(&net, &medlab, 4, pb::PurchaseStatus::KeyDelivered).await;
    let request = purchase(&net, &medlab, 3).await;
    assert_eq!(
        request.status,
        pb::PurchaseStatus::AwaitingKey as i32,
        "the validation request got a key"
    );
    let log = std::fs::read_to_string(net.dir.path().join("node0").join("gateway.log")).unwrap();
    assert_eq!(
        log.matches("purchase 3 is a validator's key request")
            .count(),
        1,
        "the skipped request is logged once: {log}"
    );

    // A JSON array (named so that only --format says what it is) with previews, listed as
    // dataset 3; a malformed one is refused before anything is encrypted or uploaded.
    let bad = work.join("bad.json");
    std::fs::write(&bad, "[{\"age\": 1},\n {\"age\": [2]}]").unwrap();
    let err = net
        .dataset(
            "upload",
            "medlab",
            "provider",
            &[
                "--file",
                bad.to_str().unwrap(),
                "--title",
                "bad",
                "--price",
                "1",
            ],
        )
        .unwrap_err();
    assert!(
        err.contains("line 2, column \"age\": a nested array is not a cell value"),
        "{err}"
    );
    let rows = work.join("heart.rows");
    json_array(&rows, 40);
    let plain = std::fs::read(&rows).unwrap();
    let out = net
        .dataset(
            "upload",
            "medlab",
            "provider",
            &[
                "--file",
                rows.to_str().unwrap(),
                "--format",
                "json",
                "--preview-rows",
                "3",
                "--title",
                "heart json",
                "--price",
                "100",
            ],
        )
        .unwrap();
    assert!(
        out.contains("listed dataset 3") && out.contains("format json, previews up to 3 rows"),
        "{out}"
    );
    let d: pb::Dataset = net
        .light
        .record(&medlab, query::dataset(3))
        .await
        .unwrap()
        .unwrap();
    let summary =
        neurodata_tabular::summarize(plain.as_slice(), neurodata_tabular::Format::JsonArray, None)
            .unwrap();
    assert_eq!(d.format, pb::DataFormat::JsonArray as i32);
    assert_eq!(d.rows_root, summary.rows_root.to_vec());
    assert_eq!((d.rows, d.preview_rows), (40, 3));
    let shown = net
        .dataset("show", "healthtech", "buyer", &["--dataset", "3"])
        .unwrap();
    assert!(
        shown.contains("format json, previews up to 3 rows"),
        "{shown}"
    );
    let listed = net
        .dataset("list", "healthtech", "buyer", &["--org", "medlab"])
        .unwrap();
    assert!(
        listed.contains("format csv, no previews") && listed.contains("format json, previews"),
        "{listed}"
    );
    net.dataset("buy", "healthtech", "buyer", &["--dataset", "3"])
        .unwrap();
    let got = work.join("bought.json");
    let out = net
        .dataset(
            "download",
            "healthtech",
            "buyer",
            &["--purchase", "5", "--out", got.to_str().unwrap()],
        )
        .unwrap();
    assert!(out.contains("and so do its rows (rows root)"), "{out}");
    assert_eq!(std::fs::read(&got).unwrap(), plain);
}
