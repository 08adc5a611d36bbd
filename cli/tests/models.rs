//! The models marketplace end to end on a real 4-validator devnet with the founding orgs'
//! gateways, datacorp's worker and a verifier beside every validator (`ndctl devnet up
//! --training`), driven with `ndctl` as members drive it.
//!
//! One network, in order:
//! 1. medlab lists its heart data; healthtech buys it and has the chain train a logistic
//!    regression on it (model version 1).
//! 2. medlab registers the dataset's hidden evaluation split (a split without the dataset's
//!    columns is refused before anything is uploaded).
//! 3. healthtech publishes model version 1 (datacorp cannot: it is not theirs); a card claim
//!    that differs from the chain is refused naming the field, the chain's own card accepted;
//!    the validators' verifiers get the listing's key from healthtech's gateway, decrypt both
//!    ciphertexts and attest them, and the test waits until the listing is verified.
//! 4. healthtech cannot buy its own model; datacorp cannot predict before buying; datacorp buys
//!    and installs the model (key delivered by healthtech's gateway, both files checked against
//!    the card), which pays healthtech, the reward pool and medlab's royalty: balances, supply
//!    and the dataset's and listing's stats.
//! 5. datacorp predicts through its own gateway in batches; a medlab member is refused the
//!    model at datacorp's gateway (PERMISSION_DENIED); rows with a missing column, an extra
//!    column, a wrong type, and a batch over the row limit are refused, naming what is wrong.
//! 6. healthtech asks for an evaluation; the validators' verifiers score the ONNX export on the
//!    hidden split and the agreed score is the one the trainer's scoring gives on the same
//!    bytes; `ndctl leaderboard 1` lists it with its lineage; a second request is refused.
//! 7. healthtech lists model version 1 again with a junk ONNX export encrypted under the listed
//!    key (through the client library: `ndctl` would not make one); every validator org attests
//!    it negative (the model file right, the ONNX export not the card's), it stays unverified,
//!    and `ndctl model buy` refuses it, saying why.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{DevnetDir, ndctl};
use neurodata_abci::address::Address;
use neurodata_abci::query;
use neurodata_client::gateway::{GatewayClient, GatewayTls};
use neurodata_client::{Amount, ChainAccess, ClientError, NodeClient, Signer, msg, submit};
use neurodata_crypto::DataKey;
use neurodata_crypto::cid::Cid;
use neurodata_proto::chain::v1 as pb;
use neurodata_proto::gateway::v1 as gw;

/// Distinct from the other end-to-end tests' networks (27000..=28700 are taken).
const BASE_PORT: u16 = 28800;

struct Net {
    dir: DevnetDir,
    spec: serde_json::Value,
}

impl Net {
    fn up() -> Net {
        let dir = DevnetDir::new("ndmd");
        let base = BASE_PORT.to_string();
        ndctl(
            dir.path(),
            &[
                "devnet",
                "up",
                "--validators",
                "4",
                "--gateways",
                "--training",
                "--base-port",
                &base,
            ],
        )
        .unwrap_or_else(|e| panic!("devnet up failed: {e}"));
        let spec = dir.json("devnet.json");
        Net { dir, spec }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn org_dir(&self, org: &str) -> PathBuf {
        self.path().join("consortium").join(org)
    }

    fn gateway_url(&self, org: &str) -> String {
        self.spec["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["gateway"]["org"] == org)
            .map(|n| n["gateway"]["url"].as_str().unwrap().to_owned())
            .unwrap()
    }

    fn node(&self) -> NodeClient {
        NodeClient::new(self.spec["nodes"][0]["rpc"].as_str().unwrap()).unwrap()
    }

    /// Runs `ndctl WORD WORD <member flags> REST...` as `org`'s `role` member through
    /// `gateway_org`'s gateway.
    fn run_at(
        &self,
        org: &str,
        role: &str,
        gateway_org: &str,
        args: &[&str],
    ) -> Result<String, String> {
        let o = self.org_dir(org);
        let split = args.len().min(2);
        let mut all: Vec<String> = args[..split].iter().map(|s| s.to_string()).collect();
        all.extend([
            "--cert".into(),
            o.join(format!("{role}.pem")).display().to_string(),
            "--key".into(),
            o.join(format!("{role}.key")).display().to_string(),
            "--gateway".into(),
            self.gateway_url(gateway_org),
            "--gateway-ca".into(),
            self.org_dir(gateway_org)
                .join("ca.pem")
                .display()
                .to_string(),
        ]);
        all.extend(args[split..].iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        ndctl(self.path(), &refs)
    }

    /// As [`Net::run_at`], through the member's own org's gateway.
    fn run(&self, org: &str, role: &str, args: &[&str]) -> Result<String, String> {
        self.run_at(org, role, org, args)
    }

    fn signer(&self, org: &str, role: &str) -> Signer {
        Signer::load(&self.org_dir(org), role).unwrap()
    }

    async fn gateway(&self, org: &str, role: &str) -> GatewayClient {
        let o = self.org_dir(org);
        let tls = GatewayTls::from_files(
            &o.join("ca.pem"),
            &o.join(format!("{role}.pem")),
            &o.join(format!("{role}.key")),
        )
        .unwrap();
        GatewayClient::connect(&self.gateway_url(org), Some(tls))
            .await
            .unwrap()
    }

    async fn balance(&self, a: Address) -> u128 {
        self.node()
            .record(query::account(a))
            .await
            .unwrap()
            .map_or(0, |acc| acc.balance.parse().unwrap())
    }

    async fn supply(&self) -> String {
        self.node()
            .record(query::supply())
            .await
            .unwrap()
            .unwrap()
            .total
    }

    /// Model listing `id` once `done` holds of it (read every second, up to `secs` seconds).
    async fn wait_listing(
        &self,
        id: u64,
        secs: u64,
        what: &str,
        done: impl Fn(&pb::ModelListing) -> bool,
    ) -> pb::ModelListing {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let l = self.node().record(query::model_listing(id)).await.unwrap();
            match l {
                Some(l) if done(&l) => return l,
                l if std::time::Instant::now() > deadline => {
                    panic!("model listing {id}: {what} not within {secs} s: {l:#?}")
                }
                _ => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
            }
        }
    }

    async fn listings(&self) -> Vec<pb::ModelListing> {
        self.node()
            .record(query::model_listings(pb::ModelListingFilter {
                include_delisted: true,
                ..Default::default()
            }))
            .await
            .unwrap()
            .unwrap_or_default()
            .listings
    }
}

fn heart_csv(rows: u32, seed: u32) -> String {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/heart-csv.py"))
        .args(["--rows", &rows.to_string(), "--seed", &seed.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn spec_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../trainer/jobs/heart-logreg.json")
}

fn trainer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ndctl")).with_file_name("trainer")
}

/// `csv` with every cell of column `name` passed through `f` (`None`: the column dropped).
fn edit_column(csv: &str, name: &str, f: impl Fn(&str) -> Option<String>) -> String {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == name).unwrap();
    let keep = |cells: Vec<String>| cells.join(",") + "\n";
    let mut out = String::new();
    let mut head: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    if f(name).is_none() {
        head.remove(at);
    }
    out.push_str(&keep(head));
    for line in lines {
        let mut cells: Vec<String> = line.split(',').map(str::to_owned).collect();
        match f(&cells[at]) {
            Some(v) => cells[at] = v,
            None => {
                cells.remove(at);
            }
        }
        out.push_str(&keep(cells));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_published_sold_with_royalties_run_and_ranked_by_validators() {
    let net = Net::up();
    let work = net.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let write = |name: &str, text: &str| {
        let p = work.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let heart = write("heart.csv", &heart_csv(300, 7));
    let spec = spec_file();
    let spec = spec.to_str().unwrap();

    // 1. The data, bought, and a model trained on it by the chain.
    net.run(
        "medlab",
        "provider",
        &[
            "dataset", "upload", "--file", &heart, "--title", "Heart", "--price", "2000",
        ],
    )
    .unwrap();
    net.run("healthtech", "buyer", &["dataset", "buy", "--dataset", "1"])
        .unwrap();
    let bought = work.join("bought.csv").display().to_string();
    net.run(
        "healthtech",
        "buyer",
        &[
            "dataset",
            "download",
            "--purchase",
            "1",
            "--out",
            &bought,
            "--confirm",
        ],
    )
    .unwrap();
    let out = net
        .run(
            "healthtech",
            "buyer",
            &[
                "job",
                "submit",
                "--dataset",
                "1",
                "--spec",
                spec,
                "--bounty",
                "500",
                "--wait",
            ],
        )
        .unwrap();
    assert!(out.contains("model version 1"), "{out}");

    // 2. The hidden evaluation split. One without the dataset's columns is refused first.
    let split_csv = heart_csv(120, 2027);
    let split = write("split.csv", &split_csv);
    let narrow = write("narrow.csv", &edit_column(&split_csv, "chol", |_| None));
    let e = net
        .run(
            "medlab",
            "provider",
            &["dataset", "split", "--dataset", "1", "--file", &narrow],
        )
        .unwrap_err();
    assert!(e.contains("dataset 1's columns"), "{e}");
    let d1 = net.node().record(query::dataset(1)).await.unwrap().unwrap();
    assert_eq!(d1.evaluation_split, 0, "a refused split leaves nothing");
    let out = net
        .run(
            "medlab",
            "provider",
            &["dataset", "split", "--dataset", "1", "--file", &split],
        )
        .unwrap();
    assert!(
        out.contains("hidden evaluation split of dataset 1"),
        "{out}"
    );
    let d1 = net.node().record(query::dataset(1)).await.unwrap().unwrap();
    assert_eq!(d1.evaluation_split, 2, "{out}");
    let hidden = net.node().record(query::dataset(2)).await.unwrap().unwrap();
    assert_eq!(hidden.status, pb::DatasetStatus::Hidden as i32);
    assert_eq!((hidden.evaluation_split_of, hidden.rows), (1, 120));
    assert_eq!(hidden.schema, d1.schema);

    // 3. Publishing. Not datacorp's model (it trained it, healthtech owns it).
    let publish = |org: &str, role: &str, extra: &[&str]| {
        let mut args = vec![
            "model",
            "publish",
            "--model-version",
            "1",
            "--price",
            "3000",
            "--license",
            "CC-BY-4.0",
            "--intended-use",
            "research on synthetic patients",
        ];
        args.extend(extra);
        net.run(org, role, &args)
    };
    let e = publish("datacorp", "buyer", &[]).unwrap_err();
    assert!(
        e.contains("model version 1 belongs to org healthtech"),
        "{e}"
    );
    assert!(net.listings().await.is_empty(), "{e}");
    let out = publish("healthtech", "buyer", &[]).unwrap();
    assert!(out.contains("as model listing 1"), "{out}");
    // The card the chain wrote, as JSON; a claim with another algorithm is refused naming it,
    // the chain's own card accepted (after the first listing is delisted: one per version).
    let card = net
        .run("healthtech", "buyer", &["model", "show", "1", "--json"])
        .unwrap();
    let card: serde_json::Value = serde_json::from_str(&card).unwrap();
    assert_eq!(card["algorithm"], "logistic_regression");
    assert_eq!(card["owner_org"], "healthtech");
    assert_eq!(card["trainer_org"], "datacorp");
    assert_eq!(card["datasets"][0]["dataset_id"], 1);
    assert_eq!(card["datasets"][0]["rows"], 300);
    net.run("healthtech", "buyer", &["model", "delist", "1"])
        .unwrap();
    let mut wrong = card.clone();
    wrong["algorithm"] = "mlp".into();
    let wrong = write("wrong-card.json", &wrong.to_string());
    let e = publish("healthtech", "buyer", &["--claim", &wrong]).unwrap_err();
    assert!(
        e.contains("claims algorithm = \"mlp\", but the chain records \"logistic_regression\""),
        "{e}"
    );
    assert_eq!(net.listings().await.len(), 1, "refused: no listing");
    let right = write("card.json", &card.to_string());
    let out = publish("healthtech", "buyer", &["--claim", &right]).unwrap();
    assert!(out.contains("as model listing 2"), "{out}");
    let listing = "2";
    // Buyers wait for the validators: each verifier asks healthtech's gateway for the key,
    // decrypts both ciphertexts and attests them against the card.
    let verified = net.wait_listing(2, 300, "verified", |l| l.verified).await;
    assert!(verified.verified_height > 0);
    assert!(verified.attestations.len() >= 2, "{verified:#?}");
    assert!(
        verified
            .attestations
            .iter()
            .all(|a| a.positive && a.ciphertexts_match_cids && a.model_matches && a.onnx_matches),
        "{verified:#?}"
    );
    let shown = net
        .run("datacorp", "buyer", &["model", "show", listing])
        .unwrap();
    assert!(shown.contains("verified at height"), "{shown}");
    assert!(shown.contains(": positive"), "{shown}");

    // 4. Buying. Not your own org's model.
    let owner = net.signer("healthtech", "buyer").address();
    // (healthtech's trainer member may buy models, but not one of its own org.)
    let colleague = net.signer("healthtech", "trainer").address();
    let before = net.balance(colleague).await;
    let e = net
        .run("healthtech", "trainer", &["model", "buy", listing])
        .unwrap_err();
    assert!(e.contains("belongs to your org healthtech"), "{e}");
    assert_eq!(
        net.balance(colleague).await,
        before,
        "refused: nothing moved"
    );
    // Not before buying.
    let patients = heart_csv(200, 99);
    let rows = write("patients.csv", &patients);
    let e = net
        .run(
            "datacorp",
            "buyer",
            &["model", "predict", listing, "--file", &rows],
        )
        .unwrap_err();
    assert!(e.contains("PermissionDenied"), "{e}");

    let provider = net.signer("medlab", "provider").address();
    let buyer = net.signer("datacorp", "buyer").address();
    let supply = net.supply().await;
    let (owner_before, provider_before, buyer_before) = (
        net.balance(owner).await,
        net.balance(provider).await,
        net.balance(buyer).await,
    );
    net.run("datacorp", "buyer", &["model", "buy", listing])
        .unwrap();
    let out = net
        .run("datacorp", "buyer", &["model", "install", listing])
        .unwrap();
    assert!(
        out.contains("installed model listing 2") && out.contains("confirmed purchase"),
        "{out}"
    );
    // 3000 NRC: 2% (60) to the reward pool, 10% (300) to medlab, the only data provider, the
    // rest (2640) to healthtech; datacorp paid two fees (buy, confirm).
    assert_eq!(net.balance(buyer).await, buyer_before - 3000 - 2);
    assert_eq!(net.balance(provider).await, provider_before + 300);
    assert_eq!(net.balance(owner).await, owner_before + 2640);
    assert_eq!(
        net.supply().await,
        supply,
        "a sale moves coins, it makes none"
    );
    let ds = net
        .node()
        .record(query::dataset_stats(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ds.royalties.as_str(), ds.model_sales), ("300", 1));
    let ms = net
        .node()
        .record(query::model_stats(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ms.paid, ms.revenue.as_str()), (1, "2640"));
    let out = net
        .run(
            "medlab",
            "provider",
            &["dataset", "stats", "--dataset", "1"],
        )
        .unwrap();
    assert!(out.contains("royalties 300 NRC from 1 model sale"), "{out}");

    // 5. Predictions through datacorp's gateway, 50 rows a batch.
    let preds = work.join("preds.csv");
    net.run(
        "datacorp",
        "buyer",
        &[
            "model",
            "predict",
            listing,
            "--file",
            &rows,
            "--batch",
            "50",
            "--out",
            preds.to_str().unwrap(),
        ],
    )
    .unwrap();
    let written = std::fs::read_to_string(&preds).unwrap();
    let mut lines = written.lines();
    assert_eq!(lines.next(), Some("row,prediction,p_0,p_1"), "{written}");
    let body: Vec<&str> = lines.collect();
    assert_eq!(body.len(), 200, "{written}");
    for (i, line) in body.iter().enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], i.to_string());
        assert!(["0", "1"].contains(&cells[1]), "{line}");
        let p: f64 = cells[2].parse::<f64>().unwrap() + cells[3].parse::<f64>().unwrap();
        assert!((p - 1.0).abs() < 1e-3, "{line}");
    }
    // A member of another org, at datacorp's gateway: not theirs to run.
    let e = net
        .run_at(
            "medlab",
            "buyer",
            "datacorp",
            &["model", "predict", listing, "--file", &rows],
        )
        .unwrap_err();
    assert!(e.contains("PermissionDenied"), "{e}");
    // Rows that do not fit the model, each named.
    for (what, text, names) in [
        (
            "missing column",
            edit_column(&patients, "chol", |_| None),
            "chol",
        ),
        (
            "extra column",
            patients
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    if i == 0 {
                        format!("{l},favourite_colour\n")
                    } else {
                        format!("{l},blue\n")
                    }
                })
                .collect(),
            "favourite_colour",
        ),
        (
            "wrong type",
            edit_column(&patients, "age", |_| Some("old".into())),
            "age",
        ),
    ] {
        let bad = write("bad.csv", &text);
        let e = net
            .run(
                "datacorp",
                "buyer",
                &["model", "predict", listing, "--file", &bad],
            )
            .unwrap_err();
        assert!(
            e.contains("InvalidArgument") && e.contains(names),
            "{what}: {e}"
        );
    }
    let e = net
        .run(
            "datacorp",
            "buyer",
            &[
                "model", "predict", listing, "--file", &rows, "--batch", "10001",
            ],
        )
        .unwrap_err();
    assert!(e.contains("a batch holds 1 to 10000 rows"), "{e}");
    // The gateway's own limit, for a client that does not keep it.
    let big = heart_csv(10_001, 5);
    let gateway = net.gateway("datacorp", "buyer").await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(gw::PredictRequest {
        listing_id: 2,
        format: pb::DataFormat::Csv as i32,
        rows: big.into_bytes(),
    })
    .await
    .unwrap();
    drop(tx);
    let refused = match gateway.predict(rx).await {
        Err(e) => e,
        Ok(mut answers) => answers.next().await.unwrap_err(),
    };
    assert!(
        matches!(&refused, ClientError::Gateway { code, .. } if code == "InvalidArgument"),
        "{refused}"
    );

    // 6. The validators score model version 1 on the hidden split.
    let out = net
        .run(
            "healthtech",
            "buyer",
            &[
                "model",
                "evaluate",
                "--model-version",
                "1",
                "--dataset",
                "1",
                "--wait",
            ],
        )
        .unwrap();
    assert!(out.contains("scored"), "{out}");
    let e = net
        .node()
        .record(query::evaluation(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.status, pb::EvaluationStatus::Scored as i32, "{e:#?}");
    assert_eq!((e.metric.as_str(), e.higher_is_better), ("accuracy", true));
    // The score every honest validator computes: the trainer's, on the same bytes.
    let bare = work.join("bare");
    let run = Command::new(trainer_bin())
        .args(["run", "--quiet", "--spec", spec, "--data", &bought, "--out"])
        .arg(&bare)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let model = neurodata_trainer::model::Model::from_bytes(
        &std::fs::read(bare.join("model.safetensors")).unwrap(),
    )
    .unwrap();
    let onnx = std::fs::read(bare.join("model.onnx")).unwrap();
    let expected = neurodata_trainer::score::score(
        &model,
        &onnx,
        Path::new("split.csv"),
        split_csv.as_bytes(),
    )
    .unwrap();
    assert_eq!(e.score_json, expected.json);
    let board = net.run("datacorp", "buyer", &["leaderboard", "1"]).unwrap();
    let row = board
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or_else(|| panic!("{board}"));
    for want in [
        "accuracy",
        e.score.as_str(),
        "healthtech",
        "datacorp",
        "logistic_regression",
    ] {
        assert!(row.contains(want), "{want} missing: {board}");
    }
    assert!(row.trim_end().ends_with(" 2"), "listing 2: {board}");
    let b: pb::Leaderboard = net
        .node()
        .record(query::leaderboard(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.entries.len(), 1);
    assert_eq!(b.entries[0].lineage, vec![1]);
    assert_eq!(b.entries[0].model_version, 1);
    // Scored once: a second request is refused.
    let e = net
        .run(
            "healthtech",
            "buyer",
            &[
                "model",
                "evaluate",
                "--model-version",
                "1",
                "--dataset",
                "1",
            ],
        )
        .unwrap_err();
    assert!(e.contains("already has evaluation 1"), "{e}");

    // 7. Junk under the listed key: the model file is the model version's (the trainer
    // reproduces it from the same data and spec), the ONNX export is not.
    net.run("healthtech", "buyer", &["model", "delist", listing])
        .unwrap();
    let model_file = std::fs::read(bare.join("model.safetensors")).unwrap();
    let card = verified.card.clone().unwrap();
    assert_eq!(
        openssl::sha::sha256(&model_file).to_vec(),
        card.model_sha256,
        "the trainer reproduces the model"
    );
    let key = DataKey::generate().unwrap();
    let seal = |plain: &[u8]| {
        let mut sealed = Vec::new();
        neurodata_crypto::stream::encrypt(
            plain,
            &mut sealed,
            &key,
            neurodata_crypto::stream::DEFAULT_CHUNK_SIZE,
        )
        .unwrap();
        sealed
    };
    let (model_ct, junk_ct) = (
        seal(&model_file),
        seal(b"junk, not the model's ONNX export"),
    );
    let owner_gw = net.gateway("healthtech", "buyer").await;
    let (model_cid, _) = owner_gw
        .upload(std::io::Cursor::new(model_ct.clone()))
        .await
        .unwrap();
    let (onnx_cid, _) = owner_gw
        .upload(std::io::Cursor::new(junk_ct.clone()))
        .await
        .unwrap();
    assert_eq!(onnx_cid, Cid::of(&junk_ct).to_string());
    owner_gw
        .deposit_key(key.as_bytes(), &onnx_cid)
        .await
        .unwrap();
    submit(
        &owner_gw,
        &net.signer("healthtech", "buyer"),
        Amount(1),
        vec![msg::publish_model(pb::PublishModel {
            model_version: 1,
            price: "3000".into(),
            license: "CC-BY-4.0".into(),
            intended_use: "research on synthetic patients".into(),
            model_cid,
            onnx_cid,
            key_commitment: key.commitment().to_vec(),
            model_ciphertext_size: model_ct.len() as u64,
            onnx_ciphertext_size: junk_ct.len() as u64,
            location: net.gateway_url("healthtech"),
            card: None,
        })],
    )
    .await
    .unwrap();
    let junk = net
        .wait_listing(3, 300, "attested by every validator org", |l| {
            l.attestations.len() == 3
        })
        .await;
    assert!(!junk.verified && junk.verified_height == 0, "{junk:#?}");
    for a in &junk.attestations {
        assert!(
            !a.positive && a.ciphertexts_match_cids && a.model_matches && !a.onnx_matches,
            "{a:?}"
        );
    }
    let shown = net
        .run("datacorp", "buyer", &["model", "show", "3"])
        .unwrap();
    assert!(shown.contains("NOT verified"), "{shown}");
    assert!(
        shown.contains("negative (ONNX export differs from the card)"),
        "{shown}"
    );
    let before = net.balance(buyer).await;
    let e = net
        .run("datacorp", "buyer", &["model", "buy", "3"])
        .unwrap_err();
    assert!(
        e.contains("model listing 3 is not verified") && e.contains("--unverified"),
        "{e}"
    );
    assert_eq!(net.balance(buyer).await, before, "refused: nothing moved");
}
