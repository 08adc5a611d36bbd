//! `ndctl model` and `ndctl leaderboard`: the models marketplace from a member's terminal.
//!
//! Owners `publish` a final model version: the model file and its ONNX export are fetched from
//! the worker org's gateway (the job's submitter org may read its run's artifacts there),
//! checked against the model version, encrypted with one fresh data key (each file its own
//! stream with its own nonce prefix), uploaded to the owner's gateway, the key deposited there
//! and the listing sent; the chain writes the model card from its own records. Validators then
//! attest the listing's ciphertexts (each decrypts both and compares them with the card). Buyers
//! `list` and `show` (both say whether the listing is verified, with each validator org's
//! findings), `buy` (refused while the listing is not verified, unless `--unverified`), then
//! `install` (wait for the key, unwrap it, fetch both ciphertexts from the owner's gateway, check
//! they decrypt to the card's hashes, upload them to their own gateway and hand it the key) and
//! `predict` (rows streamed in batches to their own gateway, which runs
//! the ONNX export). The owner's org asks the validators to `evaluate` its model on a dataset's
//! hidden evaluation split; `leaderboard` lists the scores they attested.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use neurodata_abci::address::Address;
use neurodata_abci::events::{EventKind, attr};
use neurodata_abci::query::{self, BuyerDataset, OrgCid};
use neurodata_client::cid::Cid;
use neurodata_client::{ChainAccess as _, msg};
use neurodata_crypto::DataKey;
use neurodata_proto::chain::v1 as pb;
use neurodata_proto::gateway::v1 as gw;
use neurodata_tabular::{Format, Row};
use serde::{Deserialize, Serialize};

use crate::dataset::{
    Gateway, decrypt_file, deposit, download_blob, event_attr, gateway, provider_gateway, record,
    seal_and_upload, submit, unwrap_key, wait_for_key,
};
use crate::{FeeArgs, Me, SignerArgs, amount, load_signer};

/// Rows per Predict batch by default.
const DEFAULT_BATCH: usize = 1_000;
/// Room left in a batch message for its other fields: the gateway's byte limit is on the rows.
const BATCH_HEADROOM: usize = 64 * 1024;

/// Models marketplace commands.
#[derive(Subcommand)]
pub enum ModelCommand {
    /// Lists a final model version of yours for sale: fetches its model file and ONNX export
    /// from the worker's gateway, encrypts both with one fresh key, uploads them to your org's
    /// gateway, deposits the key there and sends PublishModel. The card's facts (lineage,
    /// algorithm, spec, metrics, hashes) come from the chain.
    Publish {
        #[command(flatten)]
        fee: FeeArgs,
        /// The model version (`ndctl query model-version N`).
        #[arg(long)]
        model_version: u64,
        /// Price in NRC (whole NRC).
        #[arg(long)]
        price: String,
        /// Licence (SPDX id or short text).
        #[arg(long)]
        license: String,
        /// What the model is meant (and not meant) for, at most 1024 bytes.
        #[arg(long)]
        intended_use: String,
        /// The card as you state it (JSON, as `ndctl model show --json` prints one): the chain
        /// refuses the listing if any fact differs from its records.
        #[arg(long, value_name = "CARD.json")]
        claim: Option<PathBuf>,
    },
    /// Browses model listings.
    List {
        /// Only models trained on this dataset.
        #[arg(long)]
        dataset: Option<u64>,
        /// Only this owner org.
        #[arg(long)]
        org: Option<String>,
        /// Only priced at most this.
        #[arg(long)]
        max_price: Option<String>,
        /// Delisted ones too.
        #[arg(long)]
        all: bool,
        /// Only listings the validators verified.
        #[arg(long)]
        verified: bool,
    },
    /// Shows a listing (verified against the app hash): its card and usage.
    Show {
        /// Listing id.
        listing: u64,
        /// Print the card as JSON (the form `publish --claim` takes).
        #[arg(long)]
        json: bool,
    },
    /// Buys a model: its price goes into escrow until you confirm (`install` confirms). Only a
    /// listing the validators verified (its ciphertexts decrypt to the card's model and ONNX
    /// export), unless `--unverified`.
    Buy {
        #[command(flatten)]
        fee: FeeArgs,
        /// Listing id.
        listing: u64,
        /// Most you pay (default: the current price).
        #[arg(long)]
        max_price: Option<String>,
        /// Seconds to wait for the validators to verify the listing before buying.
        #[arg(long, default_value_t = 0)]
        wait_verified: u64,
        /// Buy a listing the validators have not verified. The escrow's dispute proves only a
        /// wrong key: junk encrypted under the listing's key is paid for unless `install`
        /// catches it before confirming.
        #[arg(long)]
        unverified: bool,
    },
    /// Installs a model you bought on your org's gateway: waits for the key, fetches both
    /// ciphertexts from the owner's gateway, checks they decrypt to the card's hashes, uploads
    /// them to your gateway, hands it the key, then confirms the purchase (pays the owner).
    Install {
        #[command(flatten)]
        fee: FeeArgs,
        /// Listing id.
        listing: u64,
        /// Seconds to wait for the owner to deliver the key.
        #[arg(long, default_value_t = 120)]
        wait: u64,
        /// Do not confirm the purchase once installed.
        #[arg(long)]
        no_confirm: bool,
    },
    /// Runs an installed model on a file's rows through your org's gateway, streamed in
    /// batches; writes `row,prediction` and each class's probability as CSV.
    Predict {
        /// Listing id.
        listing: u64,
        /// The rows (CSV, JSON lines or a JSON array) with the model's feature columns; the
        /// target column may be absent.
        #[arg(long)]
        file: PathBuf,
        /// How the file is written: csv, jsonl or json. Default: from the file's name.
        #[arg(long)]
        format: Option<Format>,
        /// Rows per batch (at most the gateway's 10,000; a batch is also kept under 4 MiB).
        #[arg(long, default_value_t = DEFAULT_BATCH)]
        batch: usize,
        /// Where to write the predictions (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Asks the validators to score your org's model version on the hidden evaluation split of
    /// a dataset it was trained on; the score they agree on goes on the dataset's leaderboard.
    Evaluate {
        #[command(flatten)]
        fee: FeeArgs,
        /// The model version.
        #[arg(long)]
        model_version: u64,
        /// The dataset whose hidden split it is scored on.
        #[arg(long)]
        dataset: u64,
        /// Wait until the validators scored it (or failed to agree), printing each attestation.
        #[arg(long)]
        wait: bool,
    },
    /// Changes the price of your listing.
    Price {
        #[command(flatten)]
        fee: FeeArgs,
        /// Listing id.
        listing: u64,
        /// New price in NRC.
        #[arg(long)]
        price: String,
    },
    /// Takes your listing off the market; open purchases still complete.
    Delist {
        #[command(flatten)]
        fee: FeeArgs,
        /// Listing id.
        listing: u64,
    },
}

/// The card as JSON (`model show --json`, `publish --claim`): protobuf fields by name, hashes
/// in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CardJson {
    model_version: u64,
    job_id: u64,
    datasets: Vec<LineageJson>,
    algorithm: String,
    spec_json: String,
    metrics_json: String,
    model_sha256: String,
    onnx_plain_cid: String,
    owner_org: String,
    trainer_org: String,
    /// Taken from `--intended-use` when claimed.
    #[serde(default)]
    intended_use: String,
    /// Taken from `--license` when claimed.
    #[serde(default)]
    license: String,
    target: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineageJson {
    dataset_id: u64,
    title: String,
    provider_org: String,
    rows: u64,
    plaintext_sha256: String,
}

impl From<&pb::ModelCard> for CardJson {
    fn from(c: &pb::ModelCard) -> Self {
        CardJson {
            model_version: c.model_version,
            job_id: c.job_id,
            datasets: c
                .datasets
                .iter()
                .map(|d| LineageJson {
                    dataset_id: d.dataset_id,
                    title: d.title.clone(),
                    provider_org: d.provider_org.clone(),
                    rows: d.rows,
                    plaintext_sha256: hex::encode(&d.plaintext_sha256),
                })
                .collect(),
            algorithm: c.algorithm.clone(),
            spec_json: c.spec_json.clone(),
            metrics_json: c.metrics_json.clone(),
            model_sha256: hex::encode(&c.model_sha256),
            onnx_plain_cid: c.onnx_plain_cid.clone(),
            owner_org: c.owner_org.clone(),
            trainer_org: c.trainer_org.clone(),
            intended_use: c.intended_use.clone(),
            license: c.license.clone(),
            target: c.target.clone(),
        }
    }
}

impl TryFrom<CardJson> for pb::ModelCard {
    type Error = anyhow::Error;

    fn try_from(c: CardJson) -> anyhow::Result<Self> {
        let hash = |what: &str, h: &str| {
            hex::decode(h).with_context(|| format!("{what}: {h:?} is not hex"))
        };
        Ok(pb::ModelCard {
            model_version: c.model_version,
            job_id: c.job_id,
            datasets: c
                .datasets
                .into_iter()
                .map(|d| {
                    Ok(pb::DatasetLineage {
                        plaintext_sha256: hash(
                            &format!("datasets[{}].plaintext_sha256", d.dataset_id),
                            &d.plaintext_sha256,
                        )?,
                        dataset_id: d.dataset_id,
                        title: d.title,
                        provider_org: d.provider_org,
                        rows: d.rows,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            algorithm: c.algorithm,
            spec_json: c.spec_json,
            metrics_json: c.metrics_json,
            model_sha256: hash("model_sha256", &c.model_sha256)?,
            onnx_plain_cid: c.onnx_plain_cid,
            owner_org: c.owner_org,
            trainer_org: c.trainer_org,
            intended_use: c.intended_use,
            license: c.license,
            target: c.target,
        })
    }
}

/// Reads a `--claim` file.
fn read_claim(path: &Path) -> anyhow::Result<pb::ModelCard> {
    let bytes = crate::read(path)?;
    let card: CardJson = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a model card (the JSON `ndctl model show --json` prints)",
            path.display()
        )
    })?;
    card.try_into()
        .with_context(|| format!("the card in {}", path.display()))
}

fn listing_status(l: &pb::ModelListing) -> &'static str {
    match pb::ModelListingStatus::try_from(l.status) {
        Ok(pb::ModelListingStatus::Listed) => "listed",
        Ok(pb::ModelListingStatus::Delisted) => "delisted",
        _ => "unknown",
    }
}

fn print_listing(l: &pb::ModelListing) {
    let card = l.card.clone().unwrap_or_default();
    println!(
        "model listing {} ({}): model version {} by {}, {} trained by {}\n  price {} NRC, \
         license {}, predicts {:?}, lineage datasets {:?}",
        l.id,
        listing_status(l),
        l.model_version,
        l.owner_org,
        card.algorithm,
        card.trainer_org,
        l.price,
        card.license,
        card.target,
        card.datasets
            .iter()
            .map(|d| d.dataset_id)
            .collect::<Vec<_>>()
    );
    for line in verification_lines(l) {
        println!("  {line}");
    }
}

/// Whether the validators verified `l`, and each validator org's findings.
fn verification_lines(l: &pb::ModelListing) -> Vec<String> {
    let mut lines = vec![if l.verified {
        format!(
            "verified at height {}: validators holding more than 2/3 of the voting power found \
             both ciphertexts decrypt to the card's model and ONNX export",
            l.verified_height
        )
    } else {
        "NOT verified: validators holding more than 2/3 of the voting power have not attested \
         its ciphertexts"
            .to_owned()
    }];
    for a in &l.attestations {
        let mut wrong = Vec::new();
        if !a.ciphertexts_match_cids {
            wrong.push("ciphertexts differ from their CIDs");
        }
        if !a.model_matches {
            wrong.push("model file differs from the card");
        }
        if !a.onnx_matches {
            wrong.push("ONNX export differs from the card");
        }
        lines.push(format!(
            "attested by {} at height {}: {}",
            a.org_id,
            a.height,
            if wrong.is_empty() {
                "positive".to_owned()
            } else {
                format!("negative ({})", wrong.join(", "))
            }
        ));
    }
    lines
}

/// Why `ndctl model buy` refuses unverified listing `l` without `--unverified`.
fn unverified_refusal(l: &pb::ModelListing) -> String {
    let seen = if l.attestations.is_empty() {
        "no validator org has attested it yet".to_owned()
    } else {
        verification_lines(l)[1..].join("; ")
    };
    format!(
        "model listing {id} is not verified: validators holding more than 2/3 of the voting \
         power have not attested that its ciphertexts decrypt to the card's model and ONNX \
         export ({seen}). The escrow's dispute proves only a wrong key, so junk encrypted under \
         the listing's key would be paid for once the confirm window passed. Wait for the \
         validators (ndctl model show {id}; ndctl model buy {id} --wait-verified SECS), or buy \
         anyway with --unverified (ndctl model install still checks both files before it \
         confirms)",
        id = l.id
    )
}

/// Listing `id`, read again every two seconds until the validators verified it or `wait`
/// seconds passed; the last read.
async fn wait_verified(g: &Gateway, id: u64, wait: u64) -> anyhow::Result<pb::ModelListing> {
    let deadline = std::time::Instant::now() + Duration::from_secs(wait);
    let mut told = false;
    loop {
        let l: pb::ModelListing =
            record(g, query::model_listing(id), &format!("model listing {id}")).await?;
        if l.verified || std::time::Instant::now() >= deadline {
            return Ok(l);
        }
        if !told {
            eprintln!("waiting up to {wait} s for the validators to verify model listing {id}...");
            told = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn print_card(c: &pb::ModelCard) {
    println!(
        "  card (every fact but the intended use and licence is the chain's):\n    model \
         version {} from job {} ({}), owner {}, trained by {}\n    target {:?}\n    model \
         sha256 {}\n    onnx {}\n    metrics {}\n    spec {}\n    intended use: {}",
        c.model_version,
        c.job_id,
        c.algorithm,
        c.owner_org,
        c.trainer_org,
        c.target,
        hex::encode(&c.model_sha256),
        c.onnx_plain_cid,
        c.metrics_json,
        c.spec_json,
        c.intended_use
    );
    for d in &c.datasets {
        println!(
            "    trained on dataset {} {:?} of {} ({} rows, sha256 {})",
            d.dataset_id,
            d.title,
            d.provider_org,
            d.rows,
            hex::encode(&d.plaintext_sha256)
        );
    }
}

/// `ndctl model publish`.
struct Publication {
    model_version: u64,
    price: String,
    license: String,
    intended_use: String,
    claim: Option<PathBuf>,
}

async fn publish(a: &SignerArgs, p: Publication) -> anyhow::Result<()> {
    // Read first: a claim that does not parse stops here, before anything is uploaded.
    let card = p.claim.as_deref().map(read_claim).transpose()?;
    let price = amount(&p.price)?;
    let g = gateway(a).await?;
    let mv: pb::ModelVersion = record(
        &g,
        query::model_version(p.model_version),
        &format!("model version {}", p.model_version),
    )
    .await?;
    let worker = Address::from_slice(&mv.trainer)
        .with_context(|| format!("model version {}'s trainer is not an address", mv.id))?;
    let location = g
        .conn
        .list(query::worker(worker))
        .await
        .map(|(w, _)| w.location)?;
    let source = provider_gateway(a, &g, &location).await?;
    let work = tempfile::tempdir()?;
    let model_file = work.path().join("model.safetensors");
    let onnx_file = work.path().join("model.onnx");
    // The client checks each download against its CID.
    download_blob(&source, &mv.model_cid, 0, &model_file)
        .await
        .with_context(|| {
            format!("fetching model.safetensors from the worker's gateway {location}")
        })?;
    download_blob(&source, &mv.onnx_cid, 0, &onnx_file)
        .await
        .with_context(|| format!("fetching model.onnx from the worker's gateway {location}"))?;
    let model_sha256 = openssl::sha::sha256(&crate::read(&model_file)?);
    if model_sha256.as_slice() != mv.model_sha256 {
        bail!(
            "the model file fetched hashes to {}, model version {} says {}",
            hex::encode(model_sha256),
            mv.id,
            hex::encode(&mv.model_sha256)
        );
    }
    let key = DataKey::generate()?;
    let model = seal_and_upload(&g, &model_file, &key).await?;
    let onnx = seal_and_upload(&g, &onnx_file, &key).await?;
    // One key for both files; the gateway delivers it for this signer's listing of the ONNX
    // ciphertext.
    deposit(&g, &key, &onnx.cid).await?;
    let r = submit(
        a,
        &g,
        msg::publish_model(pb::PublishModel {
            model_version: mv.id,
            price: price.to_string(),
            license: p.license,
            intended_use: p.intended_use,
            model_cid: model.cid.clone(),
            onnx_cid: onnx.cid.clone(),
            key_commitment: key.commitment().to_vec(),
            model_ciphertext_size: model.ciphertext_size,
            onnx_ciphertext_size: onnx.ciphertext_size,
            location: a.chain.gateway.clone().unwrap_or_default(),
            card: card.map(Box::new),
        }),
    )
    .await?;
    let signer = load_signer(a)?;
    let org = g
        .conn
        .list(query::identity(signer.address()))
        .await?
        .0
        .org_id;
    let listing = g
        .conn
        .link
        .record(query::model_listing_by_cid(OrgCid {
            org,
            cid: onnx.cid.clone(),
        }))
        .await?
        .map_or(0, |id| id.0);
    println!(
        "listed model version {} as model listing {listing}, price {price} NRC\n  model {} \
         ({} bytes encrypted)\n  onnx {} ({} bytes encrypted)\n  key commitment {} (key \
         deposited with the gateway)\n  tx {} at height {}",
        mv.id,
        model.cid,
        model.ciphertext_size,
        onnx.cid,
        onnx.ciphertext_size,
        hex::encode(key.commitment()),
        r.hash,
        r.height
    );
    Ok(())
}

/// The caller's newest purchase of listing `listing` that was not refunded.
async fn my_purchase(g: &Gateway, me: Address, listing: u64) -> anyhow::Result<pb::Purchase> {
    if let Some(id) = g
        .conn
        .link
        .record(query::live_model_purchase(BuyerDataset {
            buyer: me,
            dataset: listing,
        }))
        .await?
        .map(|id| id.0)
    {
        return record(g, query::purchase(id), &format!("purchase {id}")).await;
    }
    let (list, _) = g
        .conn
        .list(query::purchases(pb::PurchaseFilter {
            buyer: me.0.to_vec(),
            model_listing: listing,
            ..Default::default()
        }))
        .await?;
    list.purchases
        .into_iter()
        .filter(|p| p.model_listing == listing && p.status != pb::PurchaseStatus::Refunded as i32)
        .max_by_key(|p| p.id)
        .with_context(|| {
            format!("you have no purchase of model listing {listing}: ndctl model buy {listing}")
        })
}

async fn install(a: &SignerArgs, listing_id: u64, wait: u64, confirm: bool) -> anyhow::Result<()> {
    let me = load_signer(a)?.address();
    let g = gateway(a).await?;
    let l: pb::ModelListing = record(
        &g,
        query::model_listing(listing_id),
        &format!("model listing {listing_id}"),
    )
    .await?;
    let card = l.card.clone().unwrap_or_default();
    let bought = my_purchase(&g, me, listing_id).await?;
    let p = wait_for_key(&g, bought.id, me, wait).await?;
    let Some(key) = unwrap_key(a, &p, &l.key_commitment)? else {
        bail!(
            "the key delivered for purchase {} does not match model listing {listing_id}'s \
             commitment; prove it on chain and get refunded: ndctl dataset dispute --purchase {}",
            p.id,
            p.id
        );
    };
    let source = provider_gateway(a, &g, &l.location).await?;
    let work = tempfile::tempdir()?;
    let mut checked = Vec::new();
    for (what, cid, size) in [
        ("model.safetensors", &l.model_cid, l.model_ciphertext_size),
        ("model.onnx", &l.onnx_cid, l.onnx_ciphertext_size),
    ] {
        let sealed = work.path().join(format!("{what}.ndenc"));
        download_blob(&source, cid, size, &sealed)
            .await
            .with_context(|| format!("fetching {what} from the owner's gateway {}", l.location))?;
        let plain = work.path().join(what);
        let done = decrypt_file(&sealed, &plain, &key, size)
            .with_context(|| format!("{what} does not decrypt with the delivered key"))?;
        let _ = std::fs::remove_file(&plain);
        checked.push((what, sealed, done.plaintext_sha256));
    }
    let model_sha256 = checked[0].2;
    if model_sha256.as_slice() != card.model_sha256 {
        bail!(
            "model.safetensors decrypts to SHA-256 {}, the card says {}; do not confirm",
            hex::encode(model_sha256),
            hex::encode(&card.model_sha256)
        );
    }
    let onnx_cid = Cid::from_digest(checked[1].2).to_string();
    if onnx_cid != card.onnx_plain_cid {
        bail!(
            "model.onnx decrypts to {onnx_cid}, the card says {}; do not confirm",
            card.onnx_plain_cid
        );
    }
    // The gateway decrypts from its own blob store: the same ciphertexts, the same CIDs.
    for ((what, sealed, _), want) in checked.iter().zip([&l.model_cid, &l.onnx_cid]) {
        let (cid, _) = g
            .client
            .upload(tokio::fs::File::open(sealed).await?)
            .await
            .with_context(|| format!("uploading {what} to your gateway"))?;
        anyhow::ensure!(
            &cid == want,
            "your gateway stored {what} as {cid}, the listing names {want}"
        );
    }
    let installed = g.client.install_model(listing_id, key.as_bytes()).await?;
    println!(
        "installed model listing {listing_id} (model version {}, sha256 {}) on your gateway\n  \
         features {}\n  predicts {:?}{}",
        installed.model_version,
        hex::encode(&installed.model_sha256),
        installed.features.join(","),
        installed.target,
        if installed.classes.is_empty() {
            String::new()
        } else {
            format!(", classes {}", installed.classes.join(","))
        }
    );
    if confirm && p.status == pb::PurchaseStatus::KeyDelivered as i32 {
        let r = submit(a, &g, msg::confirm(p.id)).await?;
        println!(
            "confirmed purchase {} at height {} (tx {}): the owner and the data providers are paid",
            p.id, r.height, r.hash
        );
    }
    Ok(())
}

/// Rows gathered into Predict batches: CSV with the header line in every batch, at most
/// `max_rows` rows and `max_bytes` bytes each.
struct Batcher {
    header: Vec<u8>,
    rows: Vec<u8>,
    count: usize,
    max_rows: usize,
    max_bytes: usize,
}

impl Batcher {
    fn new(names: &[String], max_rows: usize, max_bytes: usize) -> Batcher {
        let mut header = Vec::new();
        csv_line(&mut header, names.iter().map(String::as_str));
        Batcher {
            header,
            rows: Vec::new(),
            count: 0,
            max_rows,
            max_bytes,
        }
    }

    /// Adds a row; the batch it completed (the rows before it), if adding it would go over a
    /// limit. A single row over the byte limit is refused.
    fn push(&mut self, row: Row<'_>) -> anyhow::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        csv_line(&mut line, row.fields.iter().copied());
        if self.header.len() + line.len() > self.max_bytes {
            bail!(
                "line {}: one row of {} bytes is more than a batch may hold ({} bytes)",
                row.line,
                line.len(),
                self.max_bytes
            );
        }
        let full = self.count == self.max_rows
            || self.header.len() + self.rows.len() + line.len() > self.max_bytes;
        let done = if full { self.take() } else { None };
        self.rows.extend_from_slice(&line);
        self.count += 1;
        Ok(done)
    }

    /// The rows gathered, as one batch (none if empty).
    fn take(&mut self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        let mut batch = self.header.clone();
        batch.append(&mut self.rows);
        self.count = 0;
        Some(batch)
    }
}

/// Appends `fields` as one CSV line, quoting a field that needs it.
fn csv_line<'a>(out: &mut Vec<u8>, fields: impl Iterator<Item = &'a str>) {
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if f.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(f.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(f.as_bytes());
        }
    }
    out.push(b'\n');
}

/// `ndctl model predict`.
struct Prediction {
    listing: u64,
    file: PathBuf,
    format: Format,
    batch: usize,
    out: Option<PathBuf>,
}

async fn predict(a: &SignerArgs, p: Prediction) -> anyhow::Result<()> {
    use neurodata_trainer::predict::{MAX_BATCH_BYTES, MAX_BATCH_ROWS};
    if p.batch == 0 || p.batch > MAX_BATCH_ROWS {
        bail!(
            "--batch {}: a batch holds 1 to {MAX_BATCH_ROWS} rows",
            p.batch
        );
    }
    let source =
        std::fs::File::open(&p.file).with_context(|| format!("opening {}", p.file.display()))?;
    let g = gateway(a).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<gw::PredictRequest>(2);
    let (listing, format, batch, file) = (p.listing, p.format, p.batch, p.file.clone());
    // The file is read in constant memory on a blocking thread while the batches stream.
    let reading = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let stream = neurodata_tabular::Stream::open(std::io::BufReader::new(source), format)
            .with_context(|| format!("reading {} as {format}", file.display()))?;
        let mut batcher = Batcher::new(
            stream.header().names(),
            batch,
            MAX_BATCH_BYTES.saturating_sub(BATCH_HEADROOM),
        );
        let mut rows = 0u64;
        let send = |rows: Vec<u8>| {
            tx.blocking_send(gw::PredictRequest {
                listing_id: listing,
                format: pb::DataFormat::Csv as i32,
                rows,
            })
            // The gateway ended the call (a refusal): its answer says why.
            .is_ok()
        };
        let mut open = true;
        stream
            .rows(|row| -> anyhow::Result<()> {
                rows += 1;
                if let Some(b) = batcher.push(row)? {
                    open = open && send(b);
                }
                Ok(())
            })
            .with_context(|| format!("reading {} as {format}", file.display()))?;
        if let Some(b) = batcher.take()
            && open
        {
            send(b);
        }
        Ok(rows)
    });
    let mut answers = g.client.predict(rx).await?;
    let mut out: Box<dyn std::io::Write> = match &p.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut classes: Vec<String> = Vec::new();
    let mut predicted = 0u64;
    let answered = loop {
        match answers.next().await {
            Ok(Some(r)) => {
                if predicted == 0 {
                    classes = r.classes.clone();
                    let mut header = vec!["row".to_owned(), "prediction".to_owned()];
                    header.extend(classes.iter().map(|c| format!("p_{c}")));
                    writeln!(out, "{}", header.join(","))?;
                }
                write_predictions(&mut out, &r, classes.len())?;
                predicted += r.predictions.len() as u64;
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    out.flush()?;
    let read = reading.await?;
    // The gateway's refusal first: a read that stopped because the call ended says less.
    answered.with_context(|| format!("predicting with model listing {}", p.listing))?;
    let rows = read?;
    eprintln!(
        "{predicted} of {rows} rows predicted by model listing {} through your gateway{}",
        p.listing,
        p.out
            .as_ref()
            .map(|o| format!(", written to {}", o.display()))
            .unwrap_or_default()
    );
    if predicted != rows {
        bail!("the gateway answered {predicted} rows of {rows}");
    }
    Ok(())
}

/// Writes one answer's rows: index, prediction, each class's probability.
fn write_predictions(
    out: &mut impl std::io::Write,
    r: &gw::PredictResponse,
    classes: usize,
) -> anyhow::Result<()> {
    for (i, label) in r.predictions.iter().enumerate() {
        let mut line = vec![(r.first_row + i as u64).to_string()];
        let mut field = Vec::new();
        csv_line(&mut field, std::iter::once(label.as_str()));
        line.push(String::from_utf8_lossy(&field).trim_end().to_owned());
        if classes > 0 {
            let probs = r
                .probabilities
                .get(i * classes..(i + 1) * classes)
                .context("the gateway answered fewer probabilities than rows")?;
            line.extend(probs.iter().map(|p| format!("{p:.6}")));
        }
        writeln!(out, "{}", line.join(","))?;
    }
    Ok(())
}

fn evaluation_status(e: &pb::Evaluation) -> &'static str {
    match pb::EvaluationStatus::try_from(e.status) {
        Ok(pb::EvaluationStatus::Attesting) => "attesting",
        Ok(pb::EvaluationStatus::Scored) => "scored",
        Ok(pb::EvaluationStatus::Failed) => "failed",
        _ => "unknown",
    }
}

fn print_evaluation(e: &pb::Evaluation) {
    println!(
        "evaluation {} of model version {} on dataset {} (hidden split {}): {}",
        e.id,
        e.model_version,
        e.dataset_id,
        e.split_id,
        evaluation_status(e)
    );
    match pb::EvaluationStatus::try_from(e.status) {
        Ok(pb::EvaluationStatus::Scored) => println!(
            "  {} {} ({} is better), attested at height {}: {}",
            e.metric,
            e.score,
            if e.higher_is_better {
                "higher"
            } else {
                "lower"
            },
            e.finished_height,
            e.score_json
        ),
        Ok(pb::EvaluationStatus::Failed) => {
            println!("  at height {}: {}", e.finished_height, e.failure)
        }
        _ => {}
    }
}

fn print_attestors(e: &pb::Evaluation) {
    let Some(att) = &e.attestation else { return };
    let phase = if att.revealing {
        format!("reveals until height {}", att.reveal_until)
    } else {
        format!("commits until height {}", att.commit_until)
    };
    println!("  validators scoring it ({phase}):");
    for a in &att.attestors {
        let what = if !a.refused.is_empty() {
            format!("refused: {}", a.refused)
        } else if a.revealed && a.matches {
            "revealed a score".into()
        } else if a.revealed {
            "revealed: the model did not score".into()
        } else if !a.commit.is_empty() {
            format!("committed at {}", a.commit_height)
        } else {
            "waiting".into()
        };
        println!(
            "    {} ({}, power {}): {what}",
            hex::encode(&a.validator),
            a.org_id,
            a.power
        );
    }
}

async fn evaluate(
    a: &SignerArgs,
    model_version: u64,
    dataset: u64,
    wait: bool,
) -> anyhow::Result<()> {
    let g = gateway(a).await?;
    let r = submit(a, &g, msg::request_evaluation(model_version, dataset)).await?;
    let (list, _) = g.conn.list(query::evaluations()).await?;
    let id = list
        .evaluations
        .iter()
        .filter(|e| e.model_version == model_version && e.dataset_id == dataset)
        .map(|e| e.id)
        .max()
        .context("the chain accepted the request but lists no evaluation of it")?;
    println!(
        "evaluation {id} of model version {model_version} on dataset {dataset}'s hidden split \
         requested at height {} (tx {})",
        r.height, r.hash
    );
    if !wait {
        println!("its score goes on: ndctl leaderboard {dataset}");
        return Ok(());
    }
    let mut last = None;
    loop {
        let (e, _) = g.conn.list(query::evaluation(id)).await?;
        let seen = e.attestation.as_ref().map(|a| {
            a.attestors
                .iter()
                .map(|x| (x.commit.is_empty(), x.revealed))
                .collect::<Vec<_>>()
        });
        if e.status != pb::EvaluationStatus::Attesting as i32 {
            print_evaluation(&e);
            print_attestors(&e);
            if e.status == pb::EvaluationStatus::Failed as i32 {
                bail!("evaluation {id} failed: {}", e.failure);
            }
            return Ok(());
        }
        if seen != last {
            print_attestors(&e);
            last = seen;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The leaderboard's lines, one per entry, best first within each target.
fn leaderboard_lines(b: &pb::Leaderboard) -> Vec<String> {
    let mut lines = Vec::new();
    let mut target = None;
    for e in &b.entries {
        if target != Some(&e.target) {
            lines.push(format!(
                "predicting {:?} ({}, {} is better):",
                e.target,
                e.metric,
                if e.higher_is_better {
                    "higher"
                } else {
                    "lower"
                }
            ));
            lines.push(format!(
                "  {:>4}  {:>5}  {:<9} {:<22} {:<12} {:<12} {:<20} {:<10} listing",
                "rank", "model", "metric", "score", "owner", "trainer", "algorithm", "lineage"
            ));
            target = Some(&e.target);
        }
        let lineage = e
            .lineage
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        lines.push(format!(
            "  {:>4}  {:>5}  {:<9} {:<22} {:<12} {:<12} {:<20} {:<10} {}",
            e.rank,
            e.model_version,
            e.metric,
            e.score,
            e.owner_org,
            e.trainer_org,
            e.algorithm,
            lineage,
            if e.listing_id == 0 {
                "-".to_owned()
            } else {
                e.listing_id.to_string()
            }
        ));
    }
    lines
}

/// `ndctl leaderboard DATASET`.
pub async fn leaderboard(me: &Me, dataset: u64) -> anyhow::Result<()> {
    let a = SignerArgs::new(me, None);
    let conn = crate::conn::Conn::open(&a.chain, a.identity()).await?;
    let (b, height) = conn.list(query::leaderboard(dataset)).await?;
    if b.split_id == 0 && b.entries.is_empty() {
        println!(
            "dataset {dataset} has no hidden evaluation split, so no leaderboard (its provider \
             registers one: ndctl dataset split --dataset {dataset} --file SPLIT)"
        );
        return Ok(());
    }
    println!(
        "leaderboard of dataset {dataset} (hidden split {}) at height {height}: scores attested \
         by the validators",
        b.split_id
    );
    if b.entries.is_empty() {
        println!(
            "  no model scored yet (ndctl model evaluate --model-version N --dataset {dataset})"
        );
    }
    for line in leaderboard_lines(&b) {
        println!("{line}");
    }
    Ok(())
}

/// Runs a model command.
pub async fn run(cmd: ModelCommand, me: &Me) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Publish {
            fee,
            model_version,
            price,
            license,
            intended_use,
            claim,
        } => {
            let a = SignerArgs::new(me, Some(&fee));
            let p = Publication {
                model_version,
                price,
                license,
                intended_use,
                claim,
            };
            publish(&a, p).await?
        }
        ModelCommand::List {
            dataset,
            org,
            max_price,
            all,
            verified,
        } => {
            let a = SignerArgs::new(me, None);
            let g = gateway(&a).await?;
            let (list, height) = g
                .conn
                .list(query::model_listings(pb::ModelListingFilter {
                    owner_org: org.unwrap_or_default(),
                    dataset_id: dataset.unwrap_or(0),
                    max_price: max_price
                        .map(|p| amount(&p).map(|a| a.to_string()))
                        .transpose()?
                        .unwrap_or_default(),
                    include_delisted: all,
                    verified_only: verified,
                }))
                .await?;
            if list.listings.is_empty() {
                println!("no model listings match at height {height}");
            }
            for l in &list.listings {
                print_listing(l);
            }
        }
        ModelCommand::Show { listing, json } => {
            let a = SignerArgs::new(me, None);
            let g = gateway(&a).await?;
            let l: pb::ModelListing = record(
                &g,
                query::model_listing(listing),
                &format!("model listing {listing}"),
            )
            .await?;
            let card = l.card.clone().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&CardJson::from(&card))?);
                return Ok(());
            }
            print_listing(&l);
            print_card(&card);
            println!(
                "  model {} ({} bytes), onnx {} ({} bytes), encrypted, at {}\n  key commitment {}",
                l.model_cid,
                l.model_ciphertext_size,
                l.onnx_cid,
                l.onnx_ciphertext_size,
                l.location,
                hex::encode(&l.key_commitment)
            );
            let (s, _) = g.conn.list(query::model_stats(listing)).await?;
            println!(
                "  {} purchases, {} paid, {} refunded; revenue {} NRC, royalties {} NRC",
                s.purchases,
                s.paid,
                s.refunded,
                if s.revenue.is_empty() {
                    "0"
                } else {
                    &s.revenue
                },
                if s.royalties.is_empty() {
                    "0"
                } else {
                    &s.royalties
                }
            );
        }
        ModelCommand::Buy {
            fee,
            listing,
            max_price,
            wait_verified: wait,
            unverified,
        } => {
            let a = SignerArgs::new(me, Some(&fee));
            let g = gateway(&a).await?;
            let l = wait_verified(&g, listing, wait).await?;
            // The chain sells unverified listings as it sells unverified datasets; the buyer
            // decides, and by default waits for the validators.
            if !l.verified && !unverified {
                bail!("{}", unverified_refusal(&l));
            }
            let price = amount(&l.price)?;
            let max = match max_price {
                Some(p) => amount(&p)?,
                None => price,
            };
            if max < price {
                bail!("model listing {listing} costs {price} NRC, more than --max-price {max} NRC");
            }
            let r = submit(&a, &g, msg::buy_model(listing, max)).await?;
            let id = event_attr(&r, EventKind::PurchaseOpened, attr::PURCHASE).unwrap_or_default();
            let deadline =
                event_attr(&r, EventKind::PurchaseOpened, attr::KEY_DEADLINE).unwrap_or_default();
            println!(
                "purchase {id} of model listing {listing}: {max} NRC at most in escrow (height {}, \
                 tx {}); the owner's gateway delivers the key by height {deadline}\n  then: ndctl \
                 model install {listing}",
                r.height, r.hash
            );
        }
        ModelCommand::Install {
            fee,
            listing,
            wait,
            no_confirm,
        } => {
            let a = SignerArgs::new(me, Some(&fee));
            install(&a, listing, wait, !no_confirm).await?
        }
        ModelCommand::Predict {
            listing,
            file,
            format,
            batch,
            out,
        } => {
            let a = SignerArgs::new(me, None);
            let p = Prediction {
                listing,
                format: format.unwrap_or_else(|| Format::of_path(&file)),
                file,
                batch,
                out,
            };
            predict(&a, p).await?
        }
        ModelCommand::Evaluate {
            fee,
            model_version,
            dataset,
            wait,
        } => {
            let a = SignerArgs::new(me, Some(&fee));
            evaluate(&a, model_version, dataset, wait).await?
        }
        ModelCommand::Price {
            fee,
            listing,
            price,
        } => {
            let a = SignerArgs::new(me, Some(&fee));
            let g = gateway(&a).await?;
            let price = amount(&price)?;
            let r = submit(&a, &g, msg::update_model_price(listing, price)).await?;
            println!(
                "model listing {listing} now costs {price} NRC (height {}, tx {})",
                r.height, r.hash
            );
        }
        ModelCommand::Delist { fee, listing } => {
            let a = SignerArgs::new(me, Some(&fee));
            let g = gateway(&a).await?;
            let r = submit(&a, &g, msg::delist_model(listing)).await?;
            println!(
                "delisted model listing {listing} at height {} (tx {}); open purchases still \
                 complete",
                r.height, r.hash
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rows(text: &str) -> Vec<Vec<String>> {
        let doc = neurodata_tabular::Document::parse(text.as_bytes(), Format::Csv).unwrap();
        let mut out = Vec::new();
        doc.rows(|r| -> Result<(), neurodata_tabular::ReadError> {
            out.push(r.fields.iter().map(|f| (*f).to_owned()).collect());
            Ok(())
        })
        .unwrap();
        out
    }

    fn batches(text: &str, max_rows: usize, max_bytes: usize) -> anyhow::Result<Vec<String>> {
        let doc = neurodata_tabular::Document::parse(text.as_bytes(), Format::Csv).unwrap();
        let mut b = Batcher::new(doc.header().names(), max_rows, max_bytes);
        let mut out = Vec::new();
        doc.rows(|r| -> anyhow::Result<()> {
            if let Some(batch) = b.push(r)? {
                out.push(String::from_utf8(batch).unwrap());
            }
            Ok(())
        })?;
        out.extend(b.take().map(|x| String::from_utf8(x).unwrap()));
        Ok(out)
    }

    #[test]
    fn rows_are_batched_with_the_header_in_every_batch_and_the_row_limit_kept() {
        let got = batches("a,b\n1,2\n3,4\n5,6\n", 2, 1 << 20).unwrap();
        assert_eq!(got, ["a,b\n1,2\n3,4\n", "a,b\n5,6\n"]);
        let got = batches("a,b\n1,2\n3,4\n", 2, 1 << 20).unwrap();
        assert_eq!(got, ["a,b\n1,2\n3,4\n"], "no empty batch after a full one");
    }

    #[test]
    fn a_batch_is_cut_before_it_goes_over_the_byte_limit_and_an_oversize_row_is_refused() {
        // Header 4 bytes, each row 4 bytes: 12 bytes hold two rows.
        let got = batches("a,b\n1,2\n3,4\n5,6\n", 100, 12).unwrap();
        assert_eq!(got, ["a,b\n1,2\n3,4\n", "a,b\n5,6\n"]);
        let e = batches("a,b\n1,2\n333333,4\n", 100, 9).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("line 3: one row of 9 bytes is more than a batch may hold"),
            "{e}"
        );
    }

    #[test]
    fn fields_that_need_quotes_keep_their_value_through_a_batch() {
        let text = "name,note\n\"a, b\",\"say \"\"hi\"\"\"\nplain,\"two\nlines\"\n";
        let got = batches(text, 10, 1 << 20).unwrap();
        assert_eq!(rows(&got[0]), rows(text));
    }

    #[test]
    fn predictions_are_written_with_their_row_index_and_class_probabilities() {
        let r = gw::PredictResponse {
            first_row: 1000,
            predictions: vec!["yes".into(), "no, really".into()],
            probabilities: vec![0.25, 0.75, 0.5, 0.5],
            classes: vec![],
        };
        let mut out = Vec::new();
        write_predictions(&mut out, &r, 2).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1000,yes,0.250000,0.750000\n1001,\"no, really\",0.500000,0.500000\n"
        );
        let short = gw::PredictResponse {
            probabilities: vec![0.25],
            ..r
        };
        assert!(write_predictions(&mut Vec::new(), &short, 2).is_err());
    }

    #[test]
    fn a_card_round_trips_through_its_json_and_bad_hex_is_named() {
        let card = pb::ModelCard {
            model_version: 1,
            job_id: 2,
            datasets: vec![pb::DatasetLineage {
                dataset_id: 1,
                title: "Heart".into(),
                provider_org: "medlab".into(),
                rows: 300,
                plaintext_sha256: vec![7; 32],
            }],
            algorithm: "logistic_regression".into(),
            spec_json: "{}".into(),
            metrics_json: "{\"accuracy\":0.8}".into(),
            model_sha256: vec![9; 32],
            onnx_plain_cid: "bafk".into(),
            owner_org: "healthtech".into(),
            trainer_org: "datacorp".into(),
            intended_use: "research".into(),
            license: "MIT".into(),
            target: "target".into(),
        };
        let json = serde_json::to_string(&CardJson::from(&card)).unwrap();
        let back: CardJson = serde_json::from_str(&json).unwrap();
        assert_eq!(pb::ModelCard::try_from(back).unwrap(), card);
        let bad = json.replace(&hex::encode([9u8; 32]), "zz");
        let e = pb::ModelCard::try_from(serde_json::from_str::<CardJson>(&bad).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("model_sha256: \"zz\" is not hex"), "{e}");
        let unknown = json.replacen('{', "{\"price\":\"1\",", 1);
        assert!(serde_json::from_str::<CardJson>(&unknown).is_err());
    }

    #[test]
    fn a_listing_says_whether_it_is_verified_and_what_each_org_found() {
        let attestation = |org: &str, height, onnx_matches| pb::ModelAttestation {
            org_id: org.into(),
            height,
            positive: onnx_matches,
            ciphertexts_match_cids: true,
            model_matches: true,
            onnx_matches,
            ..Default::default()
        };
        let mut l = pb::ModelListing {
            id: 3,
            attestations: vec![
                attestation("datacorp", 40, true),
                attestation("medlab", 41, false),
            ],
            ..Default::default()
        };
        assert_eq!(
            verification_lines(&l),
            [
                "NOT verified: validators holding more than 2/3 of the voting power have not \
                 attested its ciphertexts",
                "attested by datacorp at height 40: positive",
                "attested by medlab at height 41: negative (ONNX export differs from the card)",
            ]
        );
        let why = unverified_refusal(&l);
        assert!(
            why.starts_with("model listing 3 is not verified")
                && why.contains("medlab at height 41: negative (ONNX export differs")
                && why.contains("--unverified")
                && why.contains("--wait-verified"),
            "{why}"
        );
        l.attestations.clear();
        assert!(unverified_refusal(&l).contains("no validator org has attested it yet"));
        l.verified = true;
        l.verified_height = 44;
        assert!(verification_lines(&l)[0].starts_with("verified at height 44"));
    }

    #[test]
    fn the_leaderboard_lists_each_target_best_first_with_lineage_and_listing() {
        let entry = |rank, mv, score: &str, listing| pb::LeaderboardEntry {
            rank,
            evaluation_id: mv,
            model_version: mv,
            metric: "accuracy".into(),
            score: score.into(),
            higher_is_better: true,
            owner_org: "healthtech".into(),
            trainer_org: "datacorp".into(),
            algorithm: "mlp".into(),
            target: "target".into(),
            lineage: vec![1, 3],
            listing_id: listing,
            ..Default::default()
        };
        let b = pb::Leaderboard {
            dataset_id: 1,
            split_id: 2,
            entries: vec![entry(1, 4, "0.9", 2), entry(2, 1, "0.8", 0)],
        };
        let lines = leaderboard_lines(&b);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with("predicting \"target\" (accuracy, higher is better)"));
        assert!(lines[2].contains("0.9") && lines[2].contains("1,3") && lines[2].ends_with(" 2"));
        assert!(lines[3].trim_start().starts_with("2      1") && lines[3].ends_with(" -"));
    }
}
