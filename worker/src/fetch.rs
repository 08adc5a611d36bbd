//! Getting a job's data and a result's artifacts: connections to the org gateways involved
//! (each trusted through the CAs the chain lists for the consortium's orgs, with this member's
//! certificate), and a dataset's ciphertext downloaded, its delivered key unwrapped, decrypted
//! and checked against the listing.
//!
//! The dataset part mirrors `ndctl dataset download` (cli/src/dataset.rs `download` and
//! `provider_gateway`); both belong in the client library, where this copy should move.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use neurodata_abci::address::Address;
use neurodata_abci::query::{self, BuyerDataset};
use neurodata_client::ChainAccess as _;
use neurodata_client::ClientError;
use neurodata_client::gateway::{GatewayClient, GatewayTls};
use neurodata_crypto::stream::DecryptingWriter;
use neurodata_crypto::{DataKey, wrap};
use neurodata_proto::chain::v1 as pb;
use openssl::pkey::{PKey, Private};

use crate::assemble::{DataFormat, Piece, sha256_file};

/// The org gateways this member talks to: its own, and others by URL (connected once).
pub struct Gateways {
    own: GatewayClient,
    own_url: String,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    others: tokio::sync::Mutex<BTreeMap<String, GatewayClient>>,
}

impl Gateways {
    /// Connects to the member's own gateway at `url`.
    pub async fn connect(url: &str, tls: GatewayTls) -> Result<Gateways, ClientError> {
        let (cert_pem, key_pem) = (tls.cert_pem.clone(), tls.key_pem.clone());
        let own = GatewayClient::connect(url, Some(tls)).await?;
        Ok(Gateways {
            own,
            own_url: url.to_owned(),
            cert_pem,
            key_pem,
            others: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// The member's own gateway (chain reads, txs, uploads).
    pub fn own(&self) -> &GatewayClient {
        &self.own
    }

    /// The gateway at `location` (the own one for an empty location or the own URL), trusted
    /// through every member org's CA as the chain lists them.
    pub async fn at(&self, location: &str) -> Result<GatewayClient, ClientError> {
        if location.is_empty() || location == self.own_url {
            return Ok(self.own.clone());
        }
        let mut others = self.others.lock().await;
        if let Some(c) = others.get(location) {
            return Ok(c.clone());
        }
        let orgs = self.own.record(query::orgs()).await?.unwrap_or_default();
        let mut bundle = Vec::new();
        for o in orgs.orgs {
            bundle.extend(openssl::x509::X509::from_der(&o.ca_cert_der)?.to_pem()?);
        }
        let tls = GatewayTls {
            server_ca_pem: bundle,
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
            domain: None,
        };
        let client = GatewayClient::connect(location, Some(tls)).await?;
        others.insert(location.to_owned(), client.clone());
        Ok(client)
    }

    /// Forgets the connection to `location` (it failed; the next call connects again).
    pub async fn forget(&self, location: &str) {
        self.others.lock().await.remove(location);
    }
}

/// A dataset could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not yet: no key request, or its key is not delivered yet. Try again later.
    #[error("{0}")]
    NotYet(String),
    /// The data cannot be had this way: the purchase closed, the key is wrong, the plaintext is
    /// not the listing's.
    #[error("{0}")]
    Refused(String),
    /// The chain or a gateway failed.
    #[error(transparent)]
    Chain(#[from] ClientError),
    /// A local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Dataset `dataset_id` for the member `me` (whose private key is `private`), decrypted into
/// `dir/dataset-<id>.<ext>` and checked against the listing's plaintext SHA-256. The key is the
/// one delivered on `me`'s live purchase of the dataset (a training key request, a validation
/// request, or a sale). A file already there with the listing's hash is reused.
pub async fn fetch_dataset(
    gateways: &Gateways,
    me: Address,
    private: &PKey<Private>,
    dataset_id: u64,
    dir: &Path,
) -> Result<Piece, FetchError> {
    let chain = gateways.own();
    let d: pb::Dataset = chain
        .record(query::dataset(dataset_id))
        .await?
        .ok_or_else(|| FetchError::Refused(format!("dataset {dataset_id} does not exist")))?;
    let format = DataFormat::of_listing(d.format).ok_or_else(|| {
        FetchError::Refused(format!(
            "dataset {dataset_id} is listed in a format this worker does not know ({})",
            d.format
        ))
    })?;
    let plain = dir.join(format!("dataset-{dataset_id}.{}", format.extension()));
    let piece = Piece {
        dataset_id,
        path: plain.clone(),
        format,
    };
    if plain.is_file()
        && sha256_file(&plain).map_err(io(&plain))? == hex::encode(&d.plaintext_sha256)
    {
        return Ok(piece);
    }
    let id = chain
        .record(query::live_purchase(BuyerDataset {
            buyer: me,
            dataset: dataset_id,
        }))
        .await?
        .ok_or_else(|| {
            FetchError::NotYet(format!("no key request for dataset {dataset_id} yet"))
        })?;
    let p: pb::Purchase = chain
        .record(query::purchase(id.0))
        .await?
        .ok_or_else(|| FetchError::NotYet(format!("purchase {} not found yet", id.0)))?;
    match pb::PurchaseStatus::try_from(p.status) {
        Ok(pb::PurchaseStatus::AwaitingKey) => {
            return Err(FetchError::NotYet(format!(
                "waiting for {}'s gateway to deliver the key of dataset {dataset_id} (purchase {}, \
                 until height {})",
                p.provider_org, p.id, p.key_deadline_height
            )));
        }
        Ok(
            pb::PurchaseStatus::KeyDelivered
            | pb::PurchaseStatus::Confirmed
            | pb::PurchaseStatus::Released,
        ) => {}
        _ => {
            return Err(FetchError::Refused(format!(
                "purchase {} of dataset {dataset_id} is {}",
                p.id,
                neurodata_abci::escrow::status_name(p.status)
            )));
        }
    }
    // Someone else's key would unwrap to garbage and read as the provider's fault.
    if p.buyer != me.0.as_slice() && p.key_recipient != me.0.as_slice() {
        return Err(FetchError::Refused(format!(
            "purchase {} is not ours ({} bought it)",
            p.id,
            hex::encode(&p.buyer)
        )));
    }
    let key = wrap::WrappedKey::parse(&p.wrapped_key)
        .and_then(|w| wrap::unwrap(&w, private))
        .ok()
        .filter(|k| k.commitment().as_slice() == d.key_commitment)
        .ok_or_else(|| {
            FetchError::Refused(format!(
                "the key delivered on purchase {} does not match dataset {dataset_id}'s \
                 commitment (ndctl dataset dispute --purchase {} proves it on chain)",
                p.id, p.id
            ))
        })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let sealed = dir.join(format!("dataset-{dataset_id}.ndenc"));
    let source = gateways.at(&d.location).await?;
    let mut file = tokio::fs::File::create(&sealed)
        .await
        .map_err(io(&sealed))?;
    if let Err(e) = source.download(&d.cid, &mut file).await {
        gateways.forget(&d.location).await;
        return Err(e.into());
    }
    drop(file);
    let partial = dir.join(format!("dataset-{dataset_id}.partial"));
    let (s, p2) = (sealed.clone(), partial.clone());
    let done = tokio::task::spawn_blocking(move || decrypt(&s, &p2, &key))
        .await
        .map_err(|e| FetchError::Io {
            path: partial.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })??;
    let _ = std::fs::remove_file(&sealed);
    if done.as_slice() != d.plaintext_sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(FetchError::Refused(format!(
            "dataset {dataset_id} decrypts to SHA-256 {}, the listing says {}",
            hex::encode(done),
            hex::encode(&d.plaintext_sha256)
        )));
    }
    std::fs::rename(&partial, &plain).map_err(io(&plain))?;
    Ok(piece)
}

/// Decrypts `sealed` into `plain` with `key`; the plaintext's SHA-256.
fn decrypt(sealed: &Path, plain: &Path, key: &DataKey) -> Result<[u8; 32], FetchError> {
    let writer = std::io::BufWriter::new(std::fs::File::create(plain).map_err(io(plain))?);
    let mut decrypting = DecryptingWriter::new(writer, key);
    let mut input = std::fs::File::open(sealed).map_err(io(sealed))?;
    std::io::copy(&mut input, &mut decrypting).map_err(io(sealed))?;
    let (done, writer) = decrypting
        .finish()
        .map_err(|e| FetchError::Refused(format!("the ciphertext does not decrypt: {e}")))?;
    writer
        .into_inner()
        .map_err(|e| FetchError::Io {
            path: plain.display().to_string(),
            source: e.into_error(),
        })?
        .sync_all()
        .map_err(io(plain))?;
    Ok(done.plaintext_sha256)
}

/// Downloads blob `cid` from `gateway` into `path` (the bytes are checked against the CID by the
/// client; a mismatch is [`ClientError::Proof`]). Written to a temporary name first.
pub async fn download_to(
    gateway: &GatewayClient,
    cid: &str,
    path: &Path,
) -> Result<u64, FetchError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp: PathBuf = path.with_extension("download");
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
    let size = gateway.download(cid, &mut file).await;
    drop(file);
    match size {
        Ok(n) => {
            std::fs::rename(&tmp, path).map_err(io(path))?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.into())
        }
    }
}

/// Every dataset of `job`, fetched as [`fetch_dataset`] does and joined into one data file in
/// `dir` ([`crate::assemble::assemble`]); the file and its hex SHA-256. Datasets that do not
/// join are [`FetchError::Refused`].
pub async fn job_data(
    gateways: &Gateways,
    me: Address,
    private: &PKey<Private>,
    job: &pb::Job,
    dir: &Path,
) -> Result<(PathBuf, String), FetchError> {
    let mut pieces = Vec::with_capacity(job.dataset_ids.len());
    for d in &job.dataset_ids {
        pieces.push(fetch_dataset(gateways, me, private, *d, dir).await?);
    }
    let out = dir.join("job");
    tokio::task::spawn_blocking(move || crate::assemble::assemble(&pieces, &out))
        .await
        .map_err(|e| FetchError::Io {
            path: "assembling the data".into(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|e| match e {
            crate::assemble::AssembleError::Io { path, source } => FetchError::Io { path, source },
            other => FetchError::Refused(other.to_string()),
        })
}
