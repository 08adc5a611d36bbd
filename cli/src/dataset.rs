//! `ndctl dataset`: the marketplace from a member's terminal, through its org gateway.
//!
//! Providers `upload` (encrypt locally with a fresh key, upload the ciphertext, hand the key to
//! the org gateway's keystore, list the dataset); buyers `list`, `show`, `buy`, `download` (wait
//! for the key, unwrap it, check it against the commitment, fetch the ciphertext from the
//! provider's gateway, decrypt, check the plaintext hash and the rows root, optionally
//! `--confirm`), and `confirm`, `refund` or `dispute`. Files of any size go through in constant
//! memory.
//!
//! A listing's rows, schema and rows root are read by `neurodata-tabular`, the reader the trainer
//! trains with, in the listing's format (CSV, JSON lines or a JSON array), so the row count on
//! chain is the number of rows a training job reads and the rows root commits to their cells.

use neurodata_abci::events::{EventKind, attr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use neurodata_abci::query::{self, Record, Typed};
use neurodata_client::gateway::{GatewayClient, GatewayTls};
use neurodata_client::{Committed, msg};
use neurodata_crypto::stream::{DEFAULT_CHUNK_SIZE, DecryptingWriter, EncryptingReader};
use neurodata_crypto::{DataKey, dleq, wrap};
use neurodata_proto::chain::v1 as pb;
use neurodata_tabular::{self as tabular, ColumnType, Format};

use crate::conn::{Conn, Link};
use neurodata_client::ChainAccess as _;

use crate::{FeeArgs, Me, SignerArgs, amount, load_signer, read};
use neurodata_abci::escrow::status_name;

/// Marketplace commands.
#[derive(Subcommand)]
pub enum DatasetCommand {
    /// Encrypts a table (CSV, JSON lines or a JSON array), uploads the ciphertext, deposits the
    /// key with the org gateway and lists it.
    Upload {
        #[command(flatten)]
        fee: FeeArgs,
        /// The file: CSV (header row first), JSON lines (one flat object per line) or a JSON
        /// array of flat objects. Refused before anything is encrypted if it does not read.
        #[arg(long)]
        file: PathBuf,
        /// How the file is written: csv, jsonl or json (a JSON array). Default: from the file's
        /// name (.json: json; .jsonl or .ndjson: jsonl; anything else: csv).
        #[arg(long)]
        format: Option<Format>,
        /// Title of the listing.
        #[arg(long)]
        title: String,
        /// Price in NRC (whole NRC).
        #[arg(long)]
        price: String,
        /// License (SPDX id or short text).
        #[arg(long, default_value = "CC-BY-4.0")]
        license: String,
        /// Column types as `name:type,...` (int, float, string, bool, category), checked against
        /// every row; inferred from every row when absent.
        #[arg(long)]
        schema: Option<String>,
        /// Most rows a buyer's preview may show before buying (drawn on chain, proven against the
        /// listing's rows root; at most 100 and at most the file's rows). Default 0: no previews.
        #[arg(long, default_value_t = 0)]
        preview_rows: u32,
    },
    /// Browses listings.
    List {
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
        /// Dataset id.
        #[arg(long)]
        dataset: u64,
    },
    /// Buys a dataset: its price goes into escrow until you confirm.
    Buy {
        #[command(flatten)]
        fee: FeeArgs,
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
        fee: FeeArgs,
        /// Purchase id.
        #[arg(long)]
        purchase: u64,
        /// Where to write the plaintext (written only once verified).
        #[arg(long)]
        out: PathBuf,
        /// Overwrite --out if it exists.
        #[arg(long)]
        force: bool,
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
        fee: FeeArgs,
        /// Purchase id.
        #[arg(long)]
        purchase: u64,
    },
    /// Takes the price back when no key came within the delivery window.
    Refund {
        #[command(flatten)]
        fee: FeeArgs,
        /// Purchase id.
        #[arg(long)]
        purchase: u64,
    },
    /// Proves on chain that the delivered key is wrong; refunds the price.
    Dispute {
        #[command(flatten)]
        fee: FeeArgs,
        /// Purchase id.
        #[arg(long)]
        purchase: u64,
    },
    /// Takes your org's listing off the market; open purchases run to their end, then the org's
    /// gateway drops the ciphertext.
    Delist {
        #[command(flatten)]
        fee: FeeArgs,
        /// Dataset id.
        #[arg(long)]
        dataset: u64,
    },
    /// Usage of a dataset: purchases, payouts, refunds, training runs, revenue.
    Stats {
        /// Dataset id.
        #[arg(long)]
        dataset: u64,
    },
    /// Shows a few rows of a listing before you buy: asks on chain (once per dataset; the rows
    /// are drawn by the next block's hash) and checks each row's proof against the listing.
    Preview {
        #[command(flatten)]
        fee: FeeArgs,
        /// Dataset id.
        #[arg(long)]
        dataset: u64,
    },
    /// Registers the hidden evaluation split of your dataset: test rows no trainer sees,
    /// encrypted like a listing, whose key goes only to the validators scoring a model for the
    /// leaderboard (`ndctl model evaluate`). The file must have the dataset's schema; it is
    /// never for sale. One split per dataset.
    Split {
        #[command(flatten)]
        fee: FeeArgs,
        /// The public dataset the split evaluates.
        #[arg(long)]
        dataset: u64,
        /// The split's rows (CSV, JSON lines or a JSON array), with the dataset's columns.
        #[arg(long)]
        file: PathBuf,
        /// How the file is written: csv, jsonl or json. Default: from the file's name.
        #[arg(long)]
        format: Option<Format>,
    },
    /// Your purchases (or, with --org, the purchases of an org's datasets).
    Purchases {
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

/// The member's org gateway: blobs and keys go to it directly, chain reads and txs through
/// [`Conn`] (verified reads check its answers with the light client).
pub(crate) struct Gateway {
    pub(crate) client: GatewayClient,
    pub(crate) conn: Conn,
}

pub(crate) async fn gateway(a: &SignerArgs) -> anyhow::Result<Gateway> {
    let client = crate::conn::open_gateway(&a.chain, a.identity()).await?;
    Ok(Gateway {
        conn: Conn::over(Link::Gateway(client.clone()), &a.chain),
        client,
    })
}

/// A gateway of another org (the dataset's `location`), trusted through the CAs the chain
/// lists for the consortium's orgs.
pub(crate) async fn provider_gateway(
    a: &SignerArgs,
    own: &Gateway,
    location: &str,
) -> anyhow::Result<GatewayClient> {
    if location.is_empty() || Some(location) == a.chain.gateway.as_deref() {
        return Ok(own.client.clone());
    }
    let (orgs, _) = own.conn.list(query::orgs()).await?;
    let mut bundle = Vec::new();
    for o in orgs.orgs {
        bundle.extend(openssl::x509::X509::from_der(&o.ca_cert_der)?.to_pem()?);
    }
    let tls = GatewayTls {
        server_ca_pem: bundle,
        cert_pem: read(a.cert()?)?,
        key_pem: read(a.key()?)?,
        domain: None,
    };
    Ok(GatewayClient::connect(location, Some(tls)).await?)
}

pub(crate) fn event_attr(r: &Committed, kind: EventKind, key: &str) -> Option<String> {
    r.events
        .iter()
        .filter(|e| kind == e.r#type.as_str())
        .flat_map(|e| e.attributes.iter())
        .find(|a| a.key == key)
        .map(|a| a.value.clone())
}

pub(crate) async fn submit(
    a: &SignerArgs,
    g: &Gateway,
    m: pb::Message,
) -> anyhow::Result<Committed> {
    let signer = load_signer(a)?;
    g.conn.submit(&signer, amount(&a.fee)?, vec![m]).await
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

/// The format of a listing (unspecified: CSV, as listings before formats were named); `None`
/// for a format this ndctl does not know.
fn listed_format(format: i32) -> Option<Format> {
    match pb::DataFormat::try_from(format).ok()? {
        pb::DataFormat::Unspecified | pb::DataFormat::Csv => Some(Format::Csv),
        pb::DataFormat::JsonLines => Some(Format::JsonLines),
        pb::DataFormat::JsonArray => Some(Format::JsonArray),
    }
}

/// The listing's form of a format.
fn listing_format(format: Format) -> pb::DataFormat {
    match format {
        Format::Csv => pb::DataFormat::Csv,
        Format::JsonLines => pb::DataFormat::JsonLines,
        Format::JsonArray => pb::DataFormat::JsonArray,
    }
}

/// What the listing states about `file`, read as `format`: its rows, its schema (`declared` as
/// `name:type,...`, checked against the header and every row, else inferred from every row),
/// the SHA-256 of its bytes and the Merkle root over its rows, from one pass in constant memory.
fn summarize(
    file: &Path,
    format: Format,
    declared: Option<&str>,
) -> anyhow::Result<tabular::Summary> {
    let declared: Option<tabular::Schema> =
        declared.map(str::parse).transpose().context("--schema")?;
    let open = || std::fs::File::open(file).with_context(|| format!("opening {}", file.display()));
    let progress = bar(open()?.metadata()?.len(), "read");
    let summary = tabular::summarize(progress.wrap_read(open()?), format, declared.as_ref())
        .with_context(|| format!("reading {} as {format}", file.display()))?;
    progress.finish_and_clear();
    if summary.rows == 0 {
        bail!(
            "{} has a header but no data rows: nothing to list",
            file.display()
        );
    }
    Ok(summary)
}

/// The listing's form of a schema.
fn listing_schema(schema: &tabular::Schema) -> pb::Schema {
    let columns = schema
        .columns
        .iter()
        .map(|c| pb::Column {
            name: c.name.clone(),
            r#type: match c.kind {
                ColumnType::Int => pb::ColumnType::Int,
                ColumnType::Float => pb::ColumnType::Float,
                ColumnType::Bool => pb::ColumnType::Bool,
                ColumnType::Category => pb::ColumnType::Category,
                ColumnType::String => pb::ColumnType::String,
            } as i32,
        })
        .collect();
    pb::Schema { columns }
}

/// The listing's words for its previews.
fn previews(rows: u32) -> String {
    match rows {
        0 => "no previews".into(),
        1 => "previews up to 1 row".into(),
        n => format!("previews up to {n} rows"),
    }
}

/// What `ndctl dataset upload` lists besides the file's summary.
struct Listing {
    format: Format,
    title: String,
    price: String,
    license: String,
    schema: Option<String>,
    preview_rows: u32,
}

/// A file encrypted with a data key and its ciphertext uploaded to the member's own gateway.
pub(crate) struct Sealed {
    /// CID of the ciphertext (as the gateway stored it).
    pub(crate) cid: String,
    /// SHA-256 of the plaintext.
    pub(crate) plaintext_sha256: [u8; 32],
    /// Plaintext bytes.
    pub(crate) size: u64,
    /// Ciphertext bytes.
    pub(crate) ciphertext_size: u64,
}

/// Encrypts `file` with `key` into a temporary file (constant memory, any size) and uploads the
/// ciphertext to the own gateway. Each call writes a fresh stream header with its own random
/// nonce prefix, so one key may seal several files (a model and its ONNX export).
pub(crate) async fn seal_and_upload(
    g: &Gateway,
    file: &Path,
    key: &DataKey,
) -> anyhow::Result<Sealed> {
    let work = tempfile::tempdir()?;
    let sealed = work.path().join("sealed.ndenc");
    let open = || std::fs::File::open(file).with_context(|| format!("opening {}", file.display()));
    let size = open()?.metadata()?.len();
    let plaintext_sha256 = {
        let progress = bar(size, "encrypt");
        let plain = progress.wrap_read(open()?);
        let mut reader = EncryptingReader::new(plain, key, DEFAULT_CHUNK_SIZE)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&sealed)?);
        std::io::copy(&mut reader, &mut out)?;
        std::io::Write::flush(&mut out)?;
        progress.finish_and_clear();
        reader
            .plaintext_sha256()
            .context("encryption ended early")?
    };
    let ciphertext_size = std::fs::metadata(&sealed)?.len();
    let progress = bar(ciphertext_size, "upload");
    let reader = progress.wrap_async_read(tokio::fs::File::open(&sealed).await?);
    let (cid, stored) = g.client.upload(reader).await?;
    progress.finish_and_clear();
    anyhow::ensure!(stored == ciphertext_size, "gateway stored {stored} bytes");
    Ok(Sealed {
        cid,
        plaintext_sha256,
        size,
        ciphertext_size,
    })
}

/// Hands `key` to the own gateway's keystore for the ciphertext `cid` (uploaded first): the
/// gateway delivers it only for this signer's listing of that CID.
pub(crate) async fn deposit(g: &Gateway, key: &DataKey, cid: &str) -> anyhow::Result<()> {
    let commitment = g.client.deposit_key(key.as_bytes(), cid).await?;
    anyhow::ensure!(
        commitment == key.commitment(),
        "the gateway's keystore answered a different key commitment"
    );
    Ok(())
}

async fn upload(a: &SignerArgs, file: &Path, l: Listing) -> anyhow::Result<()> {
    let Listing {
        format,
        title,
        price,
        license,
        schema,
        preview_rows,
    } = l;
    let summary = summarize(file, format, schema.as_deref())?;
    // Said here, before anything is encrypted, rather than by the chain after the upload.
    if u64::from(preview_rows) > summary.rows {
        bail!(
            "--preview-rows {preview_rows} is more than the file's {} rows",
            summary.rows
        );
    }
    // A gateway decrypts a previewed dataset in memory, up to 256 MiB: a larger one offering
    // previews would take buyers' requests (and fees) for previews it never serves.
    const MAX_PREVIEWED_BYTES: u64 = 256 << 20;
    if preview_rows > 0 && summary.size > MAX_PREVIEWED_BYTES {
        bail!(
            "{} is {} bytes; previews are served for files up to {MAX_PREVIEWED_BYTES} bytes: \
             list it with --preview-rows 0",
            file.display(),
            summary.size
        );
    }
    let (rows, size, schema) = (summary.rows, summary.size, listing_schema(&summary.schema));
    let g = gateway(a).await?;
    let price = amount(&price)?;
    let key = DataKey::generate()?;
    let sealed = seal_and_upload(&g, file, &key).await?;
    // The rows and schema listed must be those of the bytes sold.
    anyhow::ensure!(
        sealed.plaintext_sha256 == summary.sha256,
        "{} changed while it was being read; upload it again",
        file.display()
    );
    let Sealed {
        cid,
        plaintext_sha256,
        ciphertext_size,
        ..
    } = sealed;
    // After the upload: the deposit names the ciphertext's CID, and the gateway delivers the
    // key only for this signer's listing of that CID.
    deposit(&g, &key, &cid).await?;
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
            format: listing_format(format) as i32,
            rows_root: summary.rows_root.to_vec(),
            preview_rows,
        }),
    )
    .await?;
    let id = event_attr(&r, EventKind::DatasetRegistered, attr::DATASET).unwrap_or_default();
    println!(
        "listed dataset {id} {title:?}: {rows} rows, {} columns, {size} bytes ({ciphertext_size} encrypted), price {price} NRC\n  format {format}, {}\n  cid {cid}\n  sha256 {}\n  rows root {}\n  key commitment {} (key deposited with the gateway)\n  tx {} at height {}",
        schema.columns.len(),
        previews(preview_rows),
        hex::encode(plaintext_sha256),
        hex::encode(summary.rows_root),
        hex::encode(key.commitment()),
        r.hash,
        r.height
    );
    Ok(())
}

/// `ndctl dataset split`: the file is read with the dataset's schema declared (so a column
/// that differs is named with its line before anything is encrypted), sealed with a fresh key,
/// uploaded, its key deposited, and registered with RegisterEvalSplit.
async fn register_split(
    a: &SignerArgs,
    dataset: u64,
    file: &Path,
    format: Format,
) -> anyhow::Result<()> {
    let g = gateway(a).await?;
    let d: pb::Dataset = record(&g, query::dataset(dataset), &format!("dataset {dataset}")).await?;
    if d.evaluation_split != 0 {
        bail!(
            "dataset {dataset} already has its evaluation split (dataset {}); a split is \
             registered once",
            d.evaluation_split
        );
    }
    let declared = declared_schema(&d);
    let summary = summarize(file, format, Some(&declared))
        .with_context(|| format!("the split must have dataset {dataset}'s columns {declared}"))?;
    let key = DataKey::generate()?;
    let sealed = seal_and_upload(&g, file, &key).await?;
    anyhow::ensure!(
        sealed.plaintext_sha256 == summary.sha256,
        "{} changed while it was being read; register it again",
        file.display()
    );
    deposit(&g, &key, &sealed.cid).await?;
    let r = submit(
        a,
        &g,
        msg::register_eval_split(pb::RegisterEvalSplit {
            dataset_id: dataset,
            cid: sealed.cid.clone(),
            plaintext_sha256: sealed.plaintext_sha256.to_vec(),
            key_commitment: key.commitment().to_vec(),
            size: sealed.size,
            ciphertext_size: sealed.ciphertext_size,
            rows: summary.rows,
            schema: Some(listing_schema(&summary.schema)),
            format: listing_format(format) as i32,
            location: a.chain.gateway.clone().unwrap_or_default(),
        }),
    )
    .await?;
    let split = g
        .conn
        .list(query::dataset(dataset))
        .await
        .map(|(d, _)| d.evaluation_split)
        .unwrap_or(0);
    println!(
        "registered the hidden evaluation split of dataset {dataset} (dataset record {split}): \
         {} rows, {} bytes ({} encrypted), never for sale\n  cid {}\n  sha256 {}\n  key \
         deposited with the gateway (delivered only to validators scoring a model)\n  tx {} at \
         height {}",
        summary.rows,
        sealed.size,
        sealed.ciphertext_size,
        sealed.cid,
        hex::encode(sealed.plaintext_sha256),
        r.hash,
        r.height
    );
    Ok(())
}

/// A listing's schema as `--schema` takes it (`name:type,...`).
fn declared_schema(d: &pb::Dataset) -> String {
    d.schema
        .iter()
        .flat_map(|s| s.columns.iter())
        .map(|c| format!("{}:{}", c.name, type_name(c.r#type)))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) async fn record<R: Record>(
    g: &Gateway,
    query: Typed<R>,
    what: &str,
) -> anyhow::Result<R> {
    g.conn
        .record(query)
        .await?
        .with_context(|| format!("{what} does not exist"))
}

/// Waits up to `wait` seconds for the key of `purchase` (made by `me`, or a key request for
/// `me`) to be delivered; the purchase once it is.
pub(crate) async fn wait_for_key(
    g: &Gateway,
    purchase: u64,
    me: neurodata_abci::address::Address,
    wait: u64,
) -> anyhow::Result<pb::Purchase> {
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut told = false;
    loop {
        let p: pb::Purchase = record(
            g,
            query::purchase(purchase),
            &format!("purchase {}", purchase),
        )
        .await?;
        // Checked first: someone else's purchase carries a key wrapped to someone else, which
        // would otherwise read as a wrong key and accuse the provider.
        if p.buyer != me.0.as_slice() && p.key_recipient != me.0.as_slice() {
            bail!(
                "purchase {purchase} is not yours: {} of {} bought it (you are {me})",
                hex::encode(&p.buyer),
                p.buyer_org
            );
        }
        match pb::PurchaseStatus::try_from(p.status) {
            Ok(pb::PurchaseStatus::AwaitingKey) if Instant::now() < deadline => {
                if !told {
                    eprintln!(
                        "waiting for {}'s gateway to deliver the key (until height {}, at most \
                         {wait} s here)…",
                        p.provider_org, p.key_deadline_height
                    );
                    told = true;
                }
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
            ) => return Ok(p),
            _ => bail!("purchase {purchase} is {}", status_name(p.status)),
        }
    }
}

/// The key delivered on `p`, unwrapped with your member key; `None` if it does not unwrap or
/// does not match `commitment` (a wrong key: dispute it).
pub(crate) fn unwrap_key(
    a: &SignerArgs,
    p: &pb::Purchase,
    commitment: &[u8],
) -> anyhow::Result<Option<DataKey>> {
    let private = openssl::pkey::PKey::private_key_from_pem(&read(a.key()?)?)?;
    Ok(wrap::WrappedKey::parse(&p.wrapped_key)
        .and_then(|w| wrap::unwrap(&w, &private))
        .ok()
        .filter(|k| k.commitment().as_slice() == commitment))
}

/// Downloads blob `cid` (`size` bytes, for the progress bar) from `source` into `path`; the
/// client checks the bytes against the CID.
pub(crate) async fn download_blob(
    source: &GatewayClient,
    cid: &str,
    size: u64,
    path: &Path,
) -> anyhow::Result<()> {
    let progress = bar(size, "download");
    let mut file = progress.wrap_async_write(tokio::fs::File::create(path).await?);
    source.download(cid, &mut file).await?;
    progress.finish_and_clear();
    Ok(())
}

/// Decrypts `sealed` (`size` bytes, for the progress bar) into `plain` with `key`, synced to
/// disk; what the stream says of the plaintext (its SHA-256 and length).
pub(crate) fn decrypt_file(
    sealed: &Path,
    plain: &Path,
    key: &DataKey,
    size: u64,
) -> anyhow::Result<neurodata_crypto::stream::Decrypted> {
    let progress = bar(size, "decrypt");
    let writer = std::io::BufWriter::new(std::fs::File::create(plain)?);
    let mut decrypting = DecryptingWriter::new(writer, key);
    std::io::copy(
        &mut progress.wrap_read(std::fs::File::open(sealed)?),
        &mut decrypting,
    )?;
    let (done, writer) = decrypting.finish()?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    progress.finish_and_clear();
    Ok(done)
}

async fn download(
    a: &SignerArgs,
    purchase: u64,
    out: &Path,
    force: bool,
    wait: u64,
    confirm: bool,
) -> anyhow::Result<()> {
    if out.exists() && !force {
        bail!(
            "{} exists: pass --force to overwrite it, or another --out",
            out.display()
        );
    }
    let me = load_signer(a)?.address();
    let g = gateway(a).await?;
    let p = wait_for_key(&g, purchase, me, wait).await?;
    let d: pb::Dataset = record(
        &g,
        query::dataset(p.dataset_id),
        &format!("dataset {}", p.dataset_id),
    )
    .await?;
    let Some(key) = unwrap_key(a, &p, &d.key_commitment)? else {
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
    download_blob(&source, &d.cid, d.ciphertext_size, &sealed).await?;
    let partial = work.path().join("plain");
    let done = decrypt_file(&sealed, &partial, &key, d.ciphertext_size)?;
    if done.plaintext_sha256.as_slice() != d.plaintext_sha256 {
        bail!(
            "the decrypted data hashes to {}, the listing says {}; do not confirm",
            hex::encode(done.plaintext_sha256),
            hex::encode(&d.plaintext_sha256)
        );
    }
    let rows_checked = check_rows_root(&partial, &d)?;
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving the verified file to {}", out.display()))?;
    println!(
        "downloaded dataset {} to {}: {} bytes, sha256 {} matches the listing{}",
        d.id,
        out.display(),
        done.plaintext_len,
        hex::encode(done.plaintext_sha256),
        if rows_checked {
            ", and so do its rows (rows root)"
        } else {
            " (listed before rows roots: no rows root to check)"
        }
    );
    if confirm && p.status == pb::PurchaseStatus::KeyDelivered as i32 {
        let r = submit(a, &g, msg::confirm(purchase)).await?;
        println!(
            "confirmed purchase {purchase} at height {} (tx {})",
            r.height, r.hash
        );
    }
    Ok(())
}

/// Re-reads the decrypted file `plain` in the listing's format and checks its rows against the
/// listing's rows root, which previews were proven against: a provider cannot show rows the
/// file does not hold. `false` for a listing without a rows root (made before them).
fn check_rows_root(plain: &Path, d: &pb::Dataset) -> anyhow::Result<bool> {
    if d.rows_root.is_empty() {
        return Ok(false);
    }
    let Some(format) = listed_format(d.format) else {
        bail!(
            "dataset {} is listed in a data format this ndctl does not know ({}): update ndctl to \
             check its rows; do not confirm until then",
            d.id,
            d.format
        );
    };
    let root = std::fs::File::open(plain)
        .map_err(tabular::ReadError::from)
        .and_then(|f| tabular::rows_root(f, format))
        .map_err(|e| {
            anyhow::anyhow!(
                "the decrypted data does not read as the {format} table listed ({e}); do not \
                 confirm"
            )
        })?;
    if root.as_slice() != d.rows_root {
        bail!(
            "the rows do not match the listing's rows root; do not confirm (read as {format}: \
             rows root {}, the listing says {})",
            hex::encode(root),
            hex::encode(&d.rows_root)
        );
    }
    Ok(true)
}

/// `n` things, in the singular for one.
fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

fn print_dataset(d: &pb::Dataset) {
    let format = listed_format(d.format)
        .map_or_else(|| format!("unknown ({})", d.format), |f| f.to_string());
    println!(
        "dataset {} {:?} by {} ({})\n  price {} NRC, license {}, {} rows, {} bytes, {}{}\n  format {format}, {}\n  columns {}\n  cid {} at {}",
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
        match pb::DatasetStatus::try_from(d.status) {
            Ok(pb::DatasetStatus::Delisted) => ", delisted".to_owned(),
            Ok(pb::DatasetStatus::Hidden) => format!(
                ", hidden evaluation split of dataset {}",
                d.evaluation_split_of
            ),
            _ if d.evaluation_split != 0 => format!(
                ", hidden evaluation split: dataset {} (ndctl leaderboard {})",
                d.evaluation_split, d.id
            ),
            _ => String::new(),
        },
        previews(d.preview_rows),
        declared_schema(d),
        d.cid,
        if d.location.is_empty() {
            "(provider gateway)"
        } else {
            &d.location
        }
    );
}

/// Runs a dataset command.
pub async fn run(cmd: DatasetCommand, me: &Me) -> anyhow::Result<()> {
    match cmd {
        DatasetCommand::Upload {
            fee,
            file,
            format,
            title,
            price,
            license,
            schema,
            preview_rows,
        } => {
            let signer = SignerArgs::new(me, Some(&fee));
            let listing = Listing {
                format: format.unwrap_or_else(|| Format::of_path(&file)),
                title,
                price,
                license,
                schema,
                preview_rows,
            };
            upload(&signer, &file, listing).await?
        }
        DatasetCommand::List {
            org,
            max_price,
            verified,
            column,
        } => {
            let signer = SignerArgs::new(me, None);
            let g = gateway(&signer).await?;
            let (list, _) = g
                .conn
                .list(query::datasets(pb::DatasetFilter {
                    provider_org: org.unwrap_or_default(),
                    max_price: max_price
                        .map(|p| amount(&p).map(|a| a.to_string()))
                        .transpose()?
                        .unwrap_or_default(),
                    verified_only: verified,
                    column: column.unwrap_or_default(),
                    ..Default::default()
                }))
                .await?;
            if list.datasets.is_empty() {
                println!("no datasets match");
            }
            for d in &list.datasets {
                print_dataset(d);
            }
        }
        DatasetCommand::Show { dataset } => {
            let signer = SignerArgs::new(me, None);
            let g = gateway(&signer).await?;
            let d: pb::Dataset =
                record(&g, query::dataset(dataset), &format!("dataset {}", dataset)).await?;
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
            fee,
            dataset,
            max_price,
        } => {
            let signer = SignerArgs::new(me, Some(&fee));
            let g = gateway(&signer).await?;
            // The price the buy commits to (--max-price by default) is read verified; the
            // balance check below only turns the chain's refusal into a clearer one.
            let d: pb::Dataset =
                record(&g, query::dataset(dataset), &format!("dataset {dataset}")).await?;
            let price = amount(&d.price)?;
            let max = match max_price {
                Some(p) => amount(&p)?,
                None => price,
            };
            let fee = amount(&signer.fee)?;
            let me = load_signer(&signer)?.address();
            let balance = g
                .conn
                .link
                .record(query::account(me))
                .await?
                .map(|a| a.balance)
                .unwrap_or_else(|| "0".into());
            let balance = amount(&balance)?;
            if max < price {
                bail!("dataset {dataset} costs {price} NRC, more than --max-price {max} NRC");
            }
            if price.0.saturating_add(fee.0) > balance.0 {
                bail!(
                    "dataset {dataset} costs {price} NRC plus the {fee} NRC fee; your balance is \
                     {balance} NRC"
                );
            }
            let r = submit(&signer, &g, msg::buy(dataset, max)).await?;
            let id = event_attr(&r, EventKind::PurchaseOpened, attr::PURCHASE).unwrap_or_default();
            let deadline =
                event_attr(&r, EventKind::PurchaseOpened, attr::KEY_DEADLINE).unwrap_or_default();
            println!(
                "purchase {id} of dataset {dataset}: {max} NRC at most in escrow (height {}, tx {}); the provider delivers the key by height {deadline}",
                r.height, r.hash
            );
        }
        DatasetCommand::Download {
            fee,
            purchase,
            out,
            force,
            wait,
            confirm,
        } => {
            let signer = SignerArgs::new(me, Some(&fee));
            download(&signer, purchase, &out, force, wait, confirm).await?
        }
        DatasetCommand::Confirm { fee, purchase } => {
            let signer = SignerArgs::new(me, Some(&fee));
            let g = gateway(&signer).await?;
            let r = submit(&signer, &g, msg::confirm(purchase)).await?;
            println!(
                "confirmed purchase {purchase} at height {} (tx {})",
                r.height, r.hash
            );
        }
        DatasetCommand::Refund { fee, purchase } => {
            let signer = SignerArgs::new(me, Some(&fee));
            let g = gateway(&signer).await?;
            let r = submit(&signer, &g, msg::refund(purchase)).await?;
            println!(
                "refunded purchase {purchase} at height {} (tx {})",
                r.height, r.hash
            );
        }
        DatasetCommand::Dispute { fee, purchase } => {
            let signer = SignerArgs::new(me, Some(&fee));
            let g = gateway(&signer).await?;
            let p: pb::Purchase = record(
                &g,
                query::purchase(purchase),
                &format!("purchase {}", purchase),
            )
            .await?;
            let wrapped = wrap::WrappedKey::parse(&p.wrapped_key)
                .context("the purchase holds no delivered key to dispute")?;
            let private = openssl::pkey::PKey::private_key_from_pem(&read(signer.key()?)?)?;
            let proof = dleq::prove(&wrapped, &private)?;
            let r = submit(&signer, &g, msg::dispute(purchase, proof.to_bytes())).await?;
            println!(
                "dispute upheld: purchase {purchase} refunded at height {} (tx {})",
                r.height, r.hash
            );
        }
        DatasetCommand::Delist { fee, dataset } => {
            let signer = SignerArgs::new(me, Some(&fee));
            let g = gateway(&signer).await?;
            let r = submit(&signer, &g, msg::delist(dataset)).await?;
            println!(
                "delisted dataset {dataset} at height {} (tx {})",
                r.height, r.hash
            );
        }
        DatasetCommand::Stats { dataset } => {
            let signer = SignerArgs::new(me, None);
            let g = gateway(&signer).await?;
            let s: pb::DatasetStats = g
                .conn
                .record(query::dataset_stats(dataset))
                .await?
                .unwrap_or(pb::DatasetStats {
                    dataset_id: dataset,
                    revenue: "0".into(),
                    ..Default::default()
                });
            println!(
                "dataset {dataset}: {}, {} paid, {} refunded, {}, {}, revenue {} NRC\n  \
                 royalties {} NRC from {}",
                count(s.purchases, "purchase"),
                s.paid,
                s.refunded,
                count(s.training_runs, "training run"),
                count(s.derived_models, "derived model"),
                s.revenue,
                if s.royalties.is_empty() {
                    "0"
                } else {
                    &s.royalties
                },
                count(s.model_sales, "model sale")
            );
        }
        DatasetCommand::Split {
            fee,
            dataset,
            file,
            format,
        } => {
            let signer = SignerArgs::new(me, Some(&fee));
            let format = format.unwrap_or_else(|| Format::of_path(&file));
            register_split(&signer, dataset, &file, format).await?
        }
        DatasetCommand::Preview { fee, dataset } => {
            crate::preview::run(&SignerArgs::new(me, Some(&fee)), dataset).await?
        }
        DatasetCommand::Purchases { org } => {
            let signer = SignerArgs::new(me, None);
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
            let (list, height) = g.conn.list(query::purchases(filter)).await?;
            if list.purchases.is_empty() {
                println!("no purchases at height {height}");
            }
            for p in list.purchases {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// CRLF and LF, blank lines, quoted commas and a quoted line break, and no newline after
    /// the last row: 3 rows (a count of line feeds would say 6).
    const TRICKY: &str =
        "age,sex,y\r\n40,\"f\",yes\r\n\r\n  \r\n50.5,\"m, or\nother\",no\n\n60,f,\"y\"\"es\"";

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        named(text, "data.csv")
    }

    fn named(text: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn an_upload_lists_the_rows_the_trainer_reads_and_the_hash_of_the_bytes() {
        let (_dir, path) = file(TRICKY);
        let summary = summarize(&path, Format::Csv, None).expect("summary");
        // The trainer's reader of the same bytes (`Table::parse` reads through it).
        let trainer = tabular::Document::parse(TRICKY.as_bytes(), Format::Csv)
            .and_then(|d| d.row_count())
            .expect("trainer's reader");
        assert_eq!(summary.rows, 3);
        assert_eq!(summary.rows, trainer);
        assert_eq!(summary.size, TRICKY.len() as u64);
        assert_eq!(summary.sha256, openssl::sha::sha256(TRICKY.as_bytes()));
        let listed: Vec<(String, &str)> = listing_schema(&summary.schema)
            .columns
            .into_iter()
            .map(|c| (c.name, type_name(c.r#type)))
            .collect();
        assert_eq!(
            listed,
            [
                ("age".into(), "float"),
                ("sex".into(), "category"),
                ("y".into(), "category")
            ]
        );
    }

    #[test]
    fn a_declared_schema_is_checked_against_the_header_and_every_row() {
        let (_dir, path) = file("age,sex\n40,f\n41,m\nold,f\n");
        let summary =
            summarize(&path, Format::Csv, Some("age:float, sex:category")).expect_err("old");
        let err = format!("{summary:#}");
        assert!(
            err.ends_with("line 4, column \"age\": \"old\" is not a number"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            summarize(&path, Format::Csv, Some("sex:category,age:int")).expect_err("order")
        );
        assert!(err.contains("do not match the header"), "{err}");
        let err = format!(
            "{:#}",
            summarize(&path, Format::Csv, Some("age:number")).expect_err("type")
        );
        assert!(err.starts_with("--schema: column type \"number\""), "{err}");
    }

    #[test]
    fn a_file_that_does_not_read_is_refused_before_anything_is_encrypted_with_line_and_reason() {
        let cases = [
            (
                "\u{feff}a,b\n1,2\n",
                "data.csv",
                "the file starts with a byte order mark: save it as UTF-8 without BOM",
            ),
            (
                "a,b\n1,2\n3\n",
                "data.csv",
                "line 3: 1 fields, the header has 2",
            ),
            (
                "",
                "data.json",
                "the file is empty: a table needs a header row",
            ),
            (
                "[{\"a\": 1},\n {\"a\": {\"b\": 2}}]",
                "data.json",
                "line 2, column \"a\": a nested object is not a cell value",
            ),
            (
                "{\"a\": 1}\n{\"a\": \"one\"}\n",
                "data.jsonl",
                "line 2, column \"a\": a string \"one\" where line 1 holds a number",
            ),
        ];
        for (text, name, want) in cases {
            let (_dir, path) = named(text, name);
            let err = format!(
                "{:#}",
                summarize(&path, Format::of_path(&path), None).expect_err(want)
            );
            assert!(err.contains(want), "{name}: {err}");
            assert!(
                err.starts_with(&format!("reading {} as ", path.display())),
                "{err}"
            );
        }
    }

    #[test]
    fn a_split_is_read_with_the_schema_its_dataset_lists_and_a_different_one_is_refused() {
        let (_dir, path) = file("age,sex,y\n40,f,yes\n50.5,m,no\n");
        let listed = summarize(&path, Format::Csv, None).expect("listing");
        let d = pb::Dataset {
            schema: Some(listing_schema(&listed.schema)),
            ..Default::default()
        };
        assert_eq!(declared_schema(&d), "age:float,sex:category,y:category");
        let (_split_dir, split) = named("age,sex,y\n61,m,no\n", "split.csv");
        let read = summarize(&split, Format::Csv, Some(&declared_schema(&d))).expect("split");
        assert_eq!(Some(listing_schema(&read.schema)), d.schema);
        let (_bad_dir, bad) = named("age,y\n61,no\n", "bad.csv");
        let err = format!(
            "{:#}",
            summarize(&bad, Format::Csv, Some(&declared_schema(&d))).expect_err("narrow")
        );
        assert!(err.contains("do not match the header"), "{err}");
    }

    #[test]
    fn every_format_is_listed_as_itself_and_an_unspecified_one_is_csv() {
        for format in Format::ALL {
            assert_eq!(listed_format(listing_format(format) as i32), Some(format));
        }
        assert_eq!(
            listed_format(pb::DataFormat::Unspecified as i32),
            Some(Format::Csv)
        );
        assert_eq!(listed_format(99), None);
        assert_eq!(previews(0), "no previews");
        assert_eq!(previews(5), "previews up to 5 rows");
    }

    #[test]
    fn a_download_is_checked_against_the_listings_rows_root_in_the_listings_format() {
        let array = "[{\"age\": 40, \"sex\": \"f\"}, {\"age\": 41, \"sex\": \"m\"}]";
        let (_dir, path) = named(array, "bought");
        let listed =
            tabular::summarize(array.as_bytes(), Format::JsonArray, None).expect("listing");
        let mut d = pb::Dataset {
            id: 3,
            format: pb::DataFormat::JsonArray as i32,
            rows_root: listed.rows_root.to_vec(),
            ..Default::default()
        };
        assert!(check_rows_root(&path, &d).expect("matches"));
        // Another root: refused.
        d.rows_root[0] ^= 1;
        let err = check_rows_root(&path, &d)
            .expect_err("other root")
            .to_string();
        assert!(
            err.starts_with("the rows do not match the listing's rows root; do not confirm"),
            "{err}"
        );
        // The right root, but the listing says CSV: the file does not read as one.
        d.rows_root[0] ^= 1;
        d.format = pb::DataFormat::Csv as i32;
        let err = check_rows_root(&path, &d).expect_err("as CSV").to_string();
        assert!(err.contains("do not confirm"), "{err}");
        // A listing made before rows roots: nothing to check.
        d.rows_root.clear();
        assert!(!check_rows_root(&path, &d).expect("no root"));
    }
}
