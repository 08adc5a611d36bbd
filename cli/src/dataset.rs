//! `ndctl dataset`: the marketplace from a member's terminal, through its org gateway.
//!
//! Providers `upload` (encrypt locally with a fresh key, upload the ciphertext, hand the key to
//! the org gateway's keystore, list the dataset); buyers `list`, `show`, `buy`, `download` (wait
//! for the key, unwrap it, check it against the commitment, fetch the ciphertext from the
//! provider's gateway, decrypt, check the plaintext hash, optionally `--confirm`), and `confirm`,
//! `refund` or `dispute`. Files of any size go through in constant memory.

use neurodata_abci::events::{EventKind, attr};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use neurodata_client::gateway::{GatewayClient, GatewayTls, QueryKind};
use neurodata_client::msg;
use neurodata_crypto::stream::{DEFAULT_CHUNK_SIZE, DecryptingWriter, EncryptingReader};
use neurodata_crypto::{DataKey, dleq, wrap};
use neurodata_proto::chain::v1 as pb;
use neurodata_proto::gateway::v1 as gw;

use crate::{SignerArgs, amount, load_signer, read};
use neurodata_abci::escrow::status_name;

/// Marketplace commands.
#[derive(Subcommand)]
pub enum DatasetCommand {
    /// Encrypts a CSV, uploads the ciphertext, deposits the key with the org gateway and lists it.
    Upload {
        #[command(flatten)]
        signer: SignerArgs,
        /// The CSV file (header row first).
        #[arg(long)]
        file: PathBuf,
        /// Title of the listing.
        #[arg(long)]
        title: String,
        /// Price in NRC base units.
        #[arg(long)]
        price: String,
        /// License (SPDX id or short text).
        #[arg(long, default_value = "CC-BY-4.0")]
        license: String,
        /// Column types as `name:type,...` (int, float, string, bool, category); inferred from
        /// the first 1,000 rows when absent.
        #[arg(long)]
        schema: Option<String>,
    },
    /// Browses listings.
    List {
        #[command(flatten)]
        signer: SignerArgs,
        /// Only this provider org.
        #[arg(long)]
        org: Option<String>,
        /// Only priced at most this.
        #[arg(long)]
        max_price: Option<String>,
        /// Only datasets verified by the validators.
        #[arg(long)]
        verified: bool,
        /// Only datasets with this column.
        #[arg(long)]
        column: Option<String>,
    },
    /// Shows one listing (verified against the app hash) and its usage.
    Show {
        #[command(flatten)]
        signer: SignerArgs,
        /// Dataset id.
        #[arg(long)]
        dataset: u64,
    },
    /// Buys a dataset: its price goes into escrow until you confirm.
    Buy {
        #[command(flatten)]
        signer: SignerArgs,
        /// Dataset id.
        #[arg(long)]
        dataset: u64,
        /// Most you pay (default: the current price).
        #[arg(long)]
        max_price: Option<String>,
    },
    /// Waits for the key, downloads, decrypts and verifies a purchased dataset.
    Download {
        #[command(flatten)]
        signer: SignerArgs,
        /// Purchase id.
        #[arg(long)]
        purchase: u64,
        /// Where to write the plaintext (written only once verified).
        #[arg(long)]
        out: PathBuf,
        /// Seconds to wait for the provider to deliver the key.
        #[arg(long, default_value_t = 120)]
        wait: u64,
        /// Confirm the purchase once the data verified (pays the provider).
        #[arg(long)]
        confirm: bool,
    },
    /// Confirms a purchase: escrow pays the provider.
    Confirm {
        #[command(flatten)]
        signer: SignerArgs,
        /// Purchase id.
        #[arg(long)]
        purchase: u64,
    },
    /// Takes the price back when no key came within the delivery window.
    Refund {
        #[command(flatten)]
        signer: SignerArgs,
        /// Purchase id.
        #[arg(long)]
        purchase: u64,
    },
    /// Proves on chain that the delivered key is wrong; refunds the price.
    Dispute {
        #[command(flatten)]
        signer: SignerArgs,
        /// Purchase id.
        #[arg(long)]
        purchase: u64,
    },
    /// Usage of a dataset: purchases, payouts, refunds, training runs, revenue.
    Stats {
        #[command(flatten)]
        signer: SignerArgs,
        /// Dataset id.
        #[arg(long)]
        dataset: u64,
    },
    /// Your purchases (or, with --org, the purchases of an org's datasets).
    Purchases {
        #[command(flatten)]
        signer: SignerArgs,
        /// Purchases of this provider org's datasets instead of your own.
        #[arg(long)]
        org: Option<String>,
    },
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

async fn gateway(a: &SignerArgs) -> anyhow::Result<GatewayClient> {
    crate::conn::open_gateway(&a.chain, Some((&a.signer_cert, &a.signer_key))).await
}

/// A gateway of another org (the dataset's `location`), trusted through the CAs the chain
/// lists for the consortium's orgs.
async fn provider_gateway(
    a: &SignerArgs,
    own: &GatewayClient,
    location: &str,
) -> anyhow::Result<GatewayClient> {
    if location.is_empty() || Some(location) == a.chain.gateway.as_deref() {
        return gateway(a).await;
    }
    let (bytes, _) = own.list("/orgs").await?;
    let orgs = <pb::OrgList as prost::Message>::decode(bytes.as_slice())?;
    let mut bundle = Vec::new();
    for o in orgs.orgs {
        bundle.extend(openssl::x509::X509::from_der(&o.ca_cert_der)?.to_pem()?);
    }
    let tls = GatewayTls {
        server_ca_pem: bundle,
        cert_pem: read(&a.signer_cert)?,
        key_pem: read(&a.signer_key)?,
        domain: None,
    };
    GatewayClient::connect(location, Some(tls))
        .await
        .with_context(|| format!("connecting to the provider's gateway at {location}"))
}

fn event_attr(r: &gw::BroadcastResponse, kind: EventKind, key: &str) -> Option<String> {
    r.events
        .iter()
        .filter(|e| kind == e.r#type.as_str())
        .flat_map(|e| e.attributes.iter())
        .find(|a| a.key == key)
        .map(|a| a.value.clone())
}

async fn submit(
    a: &SignerArgs,
    g: &GatewayClient,
    m: pb::Message,
) -> anyhow::Result<gw::BroadcastResponse> {
    let signer = load_signer(a)?;
    let r = g
        .submit_for_events(&signer, amount(&a.fee)?, vec![m])
        .await?;
    Ok(r)
}

fn parse_type(t: &str) -> anyhow::Result<pb::ColumnType> {
    Ok(match t {
        "int" => pb::ColumnType::Int,
        "float" => pb::ColumnType::Float,
        "string" => pb::ColumnType::String,
        "bool" => pb::ColumnType::Bool,
        "category" => pb::ColumnType::Category,
        other => bail!("column type {other:?}: expected int, float, string, bool or category"),
    })
}

fn type_name(t: i32) -> &'static str {
    match pb::ColumnType::try_from(t) {
        Ok(pb::ColumnType::Int) => "int",
        Ok(pb::ColumnType::Float) => "float",
        Ok(pb::ColumnType::String) => "string",
        Ok(pb::ColumnType::Bool) => "bool",
        Ok(pb::ColumnType::Category) => "category",
        _ => "?",
    }
}

/// The schema: from `spec` (`name:type,...`, checked against the header), else inferred from
/// the first 1,000 rows: int, else float, else bool (true/false), else category (at most 20
/// distinct values), else string.
pub fn schema_of(file: &Path, spec: Option<&str>) -> anyhow::Result<pb::Schema> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut lines = std::io::BufReader::new(f).lines();
    let header = lines
        .next()
        .context("the file is empty: a CSV needs a header row")??;
    let names: Vec<String> = header.split(',').map(|s| s.trim().to_owned()).collect();
    if let Some(spec) = spec {
        let mut columns = Vec::new();
        for part in spec.split(',') {
            let (name, t) = part
                .split_once(':')
                .with_context(|| format!("--schema entry {part:?} is not name:type"))?;
            columns.push(pb::Column {
                name: name.trim().into(),
                r#type: parse_type(t.trim())? as i32,
            });
        }
        let declared: Vec<_> = columns.iter().map(|c| c.name.clone()).collect();
        if declared != names {
            bail!("--schema names {declared:?} do not match the header {names:?}");
        }
        return Ok(pb::Schema { columns });
    }
    let mut values: Vec<std::collections::BTreeSet<String>> = vec![Default::default(); names.len()];
    let (mut ints, mut floats, mut bools) = (
        vec![true; names.len()],
        vec![true; names.len()],
        vec![true; names.len()],
    );
    for (row, line) in lines.take(1000).enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != names.len() {
            bail!(
                "row {} has {} fields, the header has {}",
                row + 1,
                cells.len(),
                names.len()
            );
        }
        for (i, c) in cells.iter().enumerate() {
            ints[i] &= c.parse::<i64>().is_ok();
            floats[i] &= c.parse::<f64>().is_ok_and(f64::is_finite);
            bools[i] &= matches!(*c, "true" | "false");
            if values[i].len() <= 20 {
                values[i].insert((*c).to_owned());
            }
        }
    }
    let columns = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let t = if ints[i] {
                pb::ColumnType::Int
            } else if floats[i] {
                pb::ColumnType::Float
            } else if bools[i] {
                pb::ColumnType::Bool
            } else if values[i].len() <= 20 {
                pb::ColumnType::Category
            } else {
                pb::ColumnType::String
            };
            pb::Column {
                name,
                r#type: t as i32,
            }
        })
        .collect();
    Ok(pb::Schema { columns })
}

/// Counts newline-terminated rows of what passes through (the header is subtracted later).
struct RowCounter<R> {
    inner: R,
    newlines: u64,
    last: u8,
    progress: ProgressBar,
}

impl<R: Read> Read for RowCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.newlines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            self.last = buf[n - 1];
            self.progress.inc(n as u64);
        }
        Ok(n)
    }
}

async fn upload(
    a: &SignerArgs,
    file: &Path,
    title: String,
    price: String,
    license: String,
    schema: Option<String>,
) -> anyhow::Result<()> {
    let g = gateway(a).await?;
    let schema = schema_of(file, schema.as_deref())?;
    let price = amount(&price)?;
    let key = DataKey::generate()?;
    let size = std::fs::metadata(file)?.len();

    // Encrypt into a temporary file next to nothing else: constant memory, any size.
    let work = tempfile::tempdir()?;
    let sealed = work.path().join("dataset.ndenc");
    let (plaintext_sha256, rows) = {
        let progress = bar(size, "encrypt");
        let counter = RowCounter {
            inner: std::fs::File::open(file)?,
            newlines: 0,
            last: b'\n',
            progress: progress.clone(),
        };
        let mut reader = EncryptingReader::new(counter, &key, DEFAULT_CHUNK_SIZE)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&sealed)?);
        std::io::copy(&mut reader, &mut out)?;
        std::io::Write::flush(&mut out)?;
        progress.finish_and_clear();
        let sha = reader
            .plaintext_sha256()
            .context("encryption ended early")?;
        // A last line without its newline is a row too; the header is not.
        let counted = reader.inner();
        let lines = counted.newlines + u64::from(counted.last != b'\n' && size > 0);
        (sha, lines.saturating_sub(1))
    };
    let ciphertext_size = std::fs::metadata(&sealed)?.len();

    let progress = bar(ciphertext_size, "upload");
    let reader = progress.wrap_async_read(tokio::fs::File::open(&sealed).await?);
    let (cid, stored) = g.upload(reader).await?;
    progress.finish_and_clear();
    anyhow::ensure!(stored == ciphertext_size, "gateway stored {stored} bytes");

    // After the upload: the deposit names the ciphertext's CID, and the gateway delivers the
    // key only for this signer's listing of that CID.
    let commitment = g.deposit_key(key.as_bytes(), &cid).await?;
    anyhow::ensure!(
        commitment == key.commitment(),
        "the gateway's keystore answered a different key commitment"
    );
    let r = submit(
        a,
        &g,
        msg::register_dataset(pb::RegisterDataset {
            cid: cid.clone(),
            plaintext_sha256: plaintext_sha256.to_vec(),
            key_commitment: key.commitment().to_vec(),
            size,
            ciphertext_size,
            rows,
            schema: Some(schema.clone()),
            price: price.to_string(),
            license,
            title: title.clone(),
            location: a.chain.gateway.clone().unwrap_or_default(),
        }),
    )
    .await?;
    let id = event_attr(&r, EventKind::DatasetRegistered, attr::DATASET).unwrap_or_default();
    println!(
        "listed dataset {id} {title:?}: {rows} rows, {} columns, {size} bytes ({ciphertext_size} encrypted), price {price} NRC\n  cid {cid}\n  sha256 {}\n  key commitment {} (key deposited with the gateway)\n  tx {} at height {}",
        schema.columns.len(),
        hex::encode(plaintext_sha256),
        hex::encode(key.commitment()),
        r.tx_hash,
        r.height
    );
    Ok(())
}

async fn record<M: prost::Message + Default>(
    g: &GatewayClient,
    kind: QueryKind,
    what: &str,
) -> anyhow::Result<M> {
    g.record(kind)
        .await?
        .with_context(|| format!("{what} does not exist"))
}

async fn download(
    a: &SignerArgs,
    purchase: u64,
    out: &Path,
    wait: u64,
    confirm: bool,
) -> anyhow::Result<()> {
    let g = gateway(a).await?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    let p = loop {
        let p: pb::Purchase = record(&g, QueryKind::Purchase(purchase), "purchase").await?;
        match pb::PurchaseStatus::try_from(p.status) {
            Ok(pb::PurchaseStatus::AwaitingKey) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(pb::PurchaseStatus::AwaitingKey) => bail!(
                "no key for purchase {purchase} after {wait} s; the provider has until height {} \
                 (then: ndctl dataset refund --purchase {purchase})",
                p.key_deadline_height
            ),
            Ok(
                pb::PurchaseStatus::KeyDelivered
                | pb::PurchaseStatus::Confirmed
                | pb::PurchaseStatus::Released,
            ) => break p,
            _ => bail!("purchase {purchase} is {}", status_name(p.status)),
        }
    };
    let d: pb::Dataset = record(&g, QueryKind::Dataset(p.dataset_id), "dataset").await?;
    let private = openssl::pkey::PKey::private_key_from_pem(&read(&a.signer_key)?)?;
    let key = wrap::WrappedKey::parse(&p.wrapped_key)
        .and_then(|w| wrap::unwrap(&w, &private))
        .ok()
        .filter(|k| k.commitment().as_slice() == d.key_commitment);
    let Some(key) = key else {
        bail!(
            "the key delivered for purchase {purchase} does not match dataset {}'s commitment; \
             prove it on chain and get refunded: ndctl dataset dispute --purchase {purchase}",
            d.id
        );
    };

    let source = provider_gateway(a, &g, &d.location).await?;
    let work = tempfile::tempdir_in(
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    let sealed = work.path().join("dataset.ndenc");
    let progress = bar(d.ciphertext_size, "download");
    let mut file = progress.wrap_async_write(tokio::fs::File::create(&sealed).await?);
    source.download(&d.cid, &mut file).await?;
    progress.finish_and_clear();

    let progress = bar(d.ciphertext_size, "decrypt");
    let partial = work.path().join("plain");
    let writer = std::io::BufWriter::new(std::fs::File::create(&partial)?);
    let mut decrypting = DecryptingWriter::new(writer, &key);
    std::io::copy(
        &mut progress.wrap_read(std::fs::File::open(&sealed)?),
        &mut decrypting,
    )?;
    let (done, writer) = decrypting.finish()?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    progress.finish_and_clear();
    if done.plaintext_sha256.as_slice() != d.plaintext_sha256 {
        bail!(
            "the decrypted data hashes to {}, the listing says {}; do not confirm",
            hex::encode(done.plaintext_sha256),
            hex::encode(&d.plaintext_sha256)
        );
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving the verified file to {}", out.display()))?;
    println!(
        "downloaded dataset {} to {}: {} bytes, sha256 {} matches the listing",
        d.id,
        out.display(),
        done.plaintext_len,
        hex::encode(done.plaintext_sha256)
    );
    if confirm && p.status == pb::PurchaseStatus::KeyDelivered as i32 {
        let r = submit(a, &g, msg::confirm(purchase)).await?;
        println!(
            "confirmed purchase {purchase} at height {} (tx {})",
            r.height, r.tx_hash
        );
    }
    Ok(())
}

fn print_dataset(d: &pb::Dataset) {
    let cols: Vec<String> = d
        .schema
        .iter()
        .flat_map(|s| s.columns.iter())
        .map(|c| format!("{}:{}", c.name, type_name(c.r#type)))
        .collect();
    println!(
        "dataset {} {:?} by {} ({})\n  price {} NRC, license {}, {} rows, {} bytes, {}{}\n  columns {}\n  cid {} at {}",
        d.id,
        d.title,
        d.provider_org,
        hex::encode(&d.provider),
        d.price,
        d.license,
        d.rows,
        d.size,
        if d.verified {
            "verified"
        } else {
            "not verified"
        },
        if d.status == pb::DatasetStatus::Delisted as i32 {
            ", delisted"
        } else {
            ""
        },
        cols.join(","),
        d.cid,
        if d.location.is_empty() {
            "(provider gateway)"
        } else {
            &d.location
        }
    );
}

/// Runs a dataset command.
pub async fn run(cmd: DatasetCommand) -> anyhow::Result<()> {
    match cmd {
        DatasetCommand::Upload {
            signer,
            file,
            title,
            price,
            license,
            schema,
        } => upload(&signer, &file, title, price, license, schema).await?,
        DatasetCommand::List {
            signer,
            org,
            max_price,
            verified,
            column,
        } => {
            let g = gateway(&signer).await?;
            let list = g
                .datasets(pb::DatasetFilter {
                    provider_org: org.unwrap_or_default(),
                    max_price: max_price
                        .map(|p| amount(&p).map(|a| a.to_string()))
                        .transpose()?
                        .unwrap_or_default(),
                    verified_only: verified,
                    column: column.unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
            if list.is_empty() {
                println!("no datasets match");
            }
            for d in &list {
                print_dataset(d);
            }
        }
        DatasetCommand::Show { signer, dataset } => {
            let g = gateway(&signer).await?;
            let d: pb::Dataset = record(&g, QueryKind::Dataset(dataset), "dataset").await?;
            print_dataset(&d);
            for at in &d.attestations {
                println!(
                    "  attested by {} at height {}: {}",
                    at.org_id,
                    at.height,
                    if at.positive {
                        "matches"
                    } else {
                        "does not match"
                    }
                );
            }
        }
        DatasetCommand::Buy {
            signer,
            dataset,
            max_price,
        } => {
            let g = gateway(&signer).await?;
            let max = match max_price {
                Some(p) => amount(&p)?,
                None => {
                    let d: pb::Dataset = record(&g, QueryKind::Dataset(dataset), "dataset").await?;
                    amount(&d.price)?
                }
            };
            let r = submit(&signer, &g, msg::buy(dataset, max)).await?;
            let id = event_attr(&r, EventKind::PurchaseOpened, attr::PURCHASE).unwrap_or_default();
            let deadline =
                event_attr(&r, EventKind::PurchaseOpened, attr::KEY_DEADLINE).unwrap_or_default();
            println!(
                "purchase {id} of dataset {dataset}: {max} NRC at most in escrow (height {}, tx {}); the provider delivers the key by height {deadline}",
                r.height, r.tx_hash
            );
        }
        DatasetCommand::Download {
            signer,
            purchase,
            out,
            wait,
            confirm,
        } => download(&signer, purchase, &out, wait, confirm).await?,
        DatasetCommand::Confirm { signer, purchase } => {
            let g = gateway(&signer).await?;
            let r = submit(&signer, &g, msg::confirm(purchase)).await?;
            println!(
                "confirmed purchase {purchase} at height {} (tx {})",
                r.height, r.tx_hash
            );
        }
        DatasetCommand::Refund { signer, purchase } => {
            let g = gateway(&signer).await?;
            let r = submit(&signer, &g, msg::refund(purchase)).await?;
            println!(
                "refunded purchase {purchase} at height {} (tx {})",
                r.height, r.tx_hash
            );
        }
        DatasetCommand::Dispute { signer, purchase } => {
            let g = gateway(&signer).await?;
            let p: pb::Purchase = record(&g, QueryKind::Purchase(purchase), "purchase").await?;
            let wrapped = wrap::WrappedKey::parse(&p.wrapped_key)
                .context("the purchase holds no delivered key to dispute")?;
            let private = openssl::pkey::PKey::private_key_from_pem(&read(&signer.signer_key)?)?;
            let proof = dleq::prove(&wrapped, &private)?;
            let r = submit(&signer, &g, msg::dispute(purchase, proof.to_bytes())).await?;
            println!(
                "dispute upheld: purchase {purchase} refunded at height {} (tx {})",
                r.height, r.tx_hash
            );
        }
        DatasetCommand::Stats { signer, dataset } => {
            let g = gateway(&signer).await?;
            let s: pb::DatasetStats =
                g.record(QueryKind::DatasetStats(dataset))
                    .await?
                    .unwrap_or(pb::DatasetStats {
                        dataset_id: dataset,
                        revenue: "0".into(),
                        ..Default::default()
                    });
            println!(
                "dataset {dataset}: {} purchases, {} paid, {} refunded, {} training runs, {} derived models, revenue {} NRC",
                s.purchases, s.paid, s.refunded, s.training_runs, s.derived_models, s.revenue
            );
        }
        DatasetCommand::Purchases { signer, org } => {
            let g = gateway(&signer).await?;
            let me = load_signer(&signer)?.address();
            let filter = match org {
                Some(o) => pb::PurchaseFilter {
                    provider_org: o,
                    ..Default::default()
                },
                None => pb::PurchaseFilter {
                    buyer: me.0.to_vec(),
                    ..Default::default()
                },
            };
            for p in g.purchases(filter).await? {
                println!(
                    "purchase {} of dataset {} by {}: {} NRC, {} (opened at {}, due {})",
                    p.id,
                    p.dataset_id,
                    p.buyer_org,
                    p.price,
                    status_name(p.status),
                    p.opened_height,
                    p.due_height
                );
            }
        }
    }
    Ok(())
}
