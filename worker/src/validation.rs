//! A validator's other duty: checking what is listed against its listing and reporting the
//! findings — a dataset with `AttestDataset`, a model listing's ciphertexts with
//! `AttestModelListing` ([`crate::model_listing`]). A validator operator asks for the key with
//! `RequestValidation` (a no-money purchase the provider's or owner's gateway answers: a
//! dataset's if its org delivers validation keys, a model listing's always); once the key is
//! delivered the verifier downloads the ciphertext from that gateway and checks, in order: the
//! ciphertext against the listing's CID, the key against its commitment, the plaintext against
//! its SHA-256, and — read by `neurodata-tabular`, the reader `ndctl` listed it with and the
//! trainer trains with — the row count and the header's column names against the listing's rows
//! and schema ([`findings`]). A mismatch is a finding (reported as `false`), never an error; only
//! this machine's own failures (a disk, a download that did not complete) are errors, retried
//! later.
//!
//! What was done for a dataset is kept in `<state>/datasets/<id>/journal.json`, for a model
//! listing in `<state>/model-listings/<id>/journal.json` ([`ValidationJournal`]);
//! [`validation_step`] decides the next step from the chain's listing and purchase records plus
//! that journal, the way [`crate::journal::verify_step`] does for jobs: Request, then Attest
//! once the key is delivered, then Confirm the validation purchase.

use std::path::{Path, PathBuf};

use neurodata_crypto::DataKey;
use neurodata_crypto::cid::Cid;
use neurodata_proto::chain::v1 as pb;
use neurodata_tabular as tabular;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::assemble::DataFormat;
use crate::journal::{JobDir, JournalError};

/// What a verifier validates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// A dataset, by id.
    Dataset(u64),
    /// A model listing, by id.
    ModelListing(u64),
}

impl Subject {
    /// Its id.
    pub fn id(&self) -> u64 {
        match self {
            Subject::Dataset(id) | Subject::ModelListing(id) => *id,
        }
    }

    /// Whether purchase `p` is of this subject.
    pub fn of(&self, p: &pb::Purchase) -> bool {
        match self {
            Subject::Dataset(id) => p.model_listing == 0 && p.dataset_id == *id,
            Subject::ModelListing(id) => p.model_listing == *id,
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Dataset(id) => write!(f, "dataset {id}"),
            Subject::ModelListing(id) => write!(f, "model listing {id}"),
        }
    }
}

/// A subject's directory under the verifier's state directory: `<state>/datasets/<id>/` or
/// `<state>/model-listings/<id>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationDir {
    /// The dataset or model listing.
    pub subject: Subject,
    /// The directory.
    pub path: PathBuf,
}

impl ValidationDir {
    /// `subject`'s directory under `state` (not created).
    pub fn new(state: &Path, subject: Subject) -> ValidationDir {
        let kind = match subject {
            Subject::Dataset(_) => "datasets",
            Subject::ModelListing(_) => "model-listings",
        };
        ValidationDir {
            subject,
            path: state.join(kind).join(subject.id().to_string()),
        }
    }

    /// The journal file's directory, as the job journals are kept (same atomic writes).
    fn journal_dir(&self) -> JobDir {
        JobDir {
            job_id: self.subject.id(),
            path: self.path.clone(),
            data: self.path.join("data"),
        }
    }

    /// Reads the journal; a missing one is the default (nothing done yet).
    pub fn load<F: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<ValidationJournal<F>, JournalError> {
        self.journal_dir().load()
    }

    /// Writes the journal atomically.
    pub fn save<F: Serialize>(&self, journal: &ValidationJournal<F>) -> Result<(), JournalError> {
        self.journal_dir().save(journal)
    }

    /// Where the ciphertexts (and a dataset's plaintext) go while checked (deleted after).
    pub fn data_dir(&self) -> PathBuf {
        self.path.join("data")
    }

    /// Deletes the downloaded and decrypted files (a failure is returned: the plaintext is the
    /// provider's secret).
    pub fn remove_data(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.data_dir()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}

/// RequestValidation sent for a subject.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requested {
    /// The block it committed in (0 when refused).
    pub height: u64,
    /// The chain's refusal, when it refused it for a reason that does not pass (not an operator,
    /// already verified, delisted...): not sent again either.
    pub refused: Option<String>,
}

/// The findings sent for a subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attested<F> {
    /// The validation purchase whose key they were made with.
    pub purchase_id: u64,
    /// The block the attestation committed in (0 when refused).
    pub height: u64,
    /// What was found.
    pub findings: F,
}

/// A verifier's journal of one subject, with its kind of findings `F`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationJournal<F> {
    /// RequestValidation was sent (once per subject, ever).
    pub requested: Option<Requested>,
    /// The attestation was sent (once per subject, ever).
    pub attested: Option<Attested<F>>,
    /// The validation purchase confirmed with ConfirmAccess.
    pub confirmed: Option<u64>,
}

impl<F> Default for ValidationJournal<F> {
    fn default() -> Self {
        ValidationJournal {
            requested: None,
            attested: None,
            confirmed: None,
        }
    }
}

/// A verifier's journal of one dataset.
pub type DatasetJournal = ValidationJournal<Findings>;

/// Findings that say whether the delivered key opened the data: a key that did not is not
/// confirmed as received.
pub trait KeyFinding {
    /// The delivered key unwrapped and matched the listing's key commitment.
    fn key_matches(&self) -> bool;
}

impl KeyFinding for Findings {
    fn key_matches(&self) -> bool {
        self.key_matches
    }
}

/// What the verifier does next for a dataset or model listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidationStep {
    /// Nothing now (why, for the logs).
    Skip(String),
    /// Send RequestValidation (a dataset listed in `--validate-datasets`, or any model listing).
    Request,
    /// Download, check and attest with the key of this purchase.
    Attest(u64),
    /// Send ConfirmAccess for this purchase: its key served (or is no longer needed), and a
    /// confirmed validation request frees its org's slot at once rather than at its due height.
    Confirm(u64),
    /// Nothing left to do.
    Done,
}

/// What the step decision reads of a listing as the chain has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// For sale (not delisted, not a hidden split).
    pub listed: bool,
    /// Verified by the validators already.
    pub verified: bool,
    /// This verifier's org has an attestation of it on chain.
    pub org_attested: bool,
}

impl Standing {
    /// A dataset's standing for a verifier of `org`.
    pub fn of_dataset(d: &pb::Dataset, org: &str) -> Standing {
        Standing {
            listed: d.status == pb::DatasetStatus::Listed as i32,
            verified: d.verified,
            org_attested: d.attestations.iter().any(|a| a.org_id == org),
        }
    }

    /// A model listing's standing for a verifier of `org`.
    pub fn of_model_listing(l: &pb::ModelListing, org: &str) -> Standing {
        Standing {
            listed: l.status == pb::ModelListingStatus::Listed as i32,
            verified: l.verified,
            org_attested: l.attestations.iter().any(|a| a.org_id == org),
        }
    }
}

/// Whether `p` carries a delivered key.
fn has_key(p: &pb::Purchase) -> bool {
    use pb::PurchaseStatus as S;
    matches!(
        S::try_from(p.status),
        Ok(S::KeyDelivered | S::Confirmed | S::Released)
    )
}

/// The newest validation purchase of `subject` bought by `me` among `purchases`.
pub fn validation_purchase<'a>(
    purchases: &'a [pb::Purchase],
    me: &[u8],
    subject: Subject,
) -> Option<&'a pb::Purchase> {
    purchases
        .iter()
        .filter(|p| p.kind == pb::PurchaseKind::Validation as i32 && p.buyer == me && subject.of(p))
        .max_by_key(|p| p.id)
}

/// The next step for `subject` (`standing`: as the chain has it, `None`: no such listing) of
/// validator operator `me`, given this member's purchases (`/purchases` by buyer), whether a
/// request may be sent for it (`wanted`: a dataset in `--validate-datasets`, any model listing)
/// and the journal.
pub fn validation_step<F: KeyFinding>(
    subject: Subject,
    standing: Option<Standing>,
    me: &[u8],
    purchases: &[pb::Purchase],
    wanted: bool,
    journal: &ValidationJournal<F>,
) -> ValidationStep {
    let Some(d) = standing else {
        return ValidationStep::Skip(format!("no such {}", kind_name(subject)));
    };
    let purchase = validation_purchase(purchases, me, subject);
    // Findings are sent once: by us (the journal) or by another operator of the org (the chain,
    // which keeps one attestation per org); a verified listing needs none.
    let settled = journal.attested.is_some() || d.org_attested || d.verified;
    if let Some(p) = purchase.filter(|p| has_key(p)) {
        if !p.key_recipient.is_empty() && p.key_recipient != me {
            return ValidationStep::Skip(format!(
                "the key of purchase {} is wrapped to another identity ({})",
                p.id,
                hex::encode(&p.key_recipient)
            ));
        }
        if !settled {
            return ValidationStep::Attest(p.id);
        }
        // A key that did not open the data is not confirmed as received.
        let key_served = journal
            .attested
            .as_ref()
            .is_none_or(|a| a.findings.key_matches());
        if p.status == pb::PurchaseStatus::KeyDelivered as i32
            && journal.confirmed != Some(p.id)
            && key_served
        {
            return ValidationStep::Confirm(p.id);
        }
        return ValidationStep::Done;
    }
    if settled {
        return if d.verified && journal.attested.is_none() && !d.org_attested {
            ValidationStep::Skip("verified already: nothing to request".into())
        } else {
            ValidationStep::Done
        };
    }
    if let Some(p) = purchase.filter(|p| p.status == pb::PurchaseStatus::AwaitingKey as i32) {
        return ValidationStep::Skip(format!(
            "waiting for {}'s gateway to deliver the key (purchase {}, until height {})",
            p.provider_org, p.id, p.key_deadline_height
        ));
    }
    if !wanted {
        return ValidationStep::Skip("not in --validate-datasets".into());
    }
    if let Some(r) = &journal.requested {
        return ValidationStep::Skip(match (&r.refused, purchase) {
            (Some(why), _) => format!("validation request refused: {why}"),
            (None, Some(p)) => format!(
                "validation request (purchase {}) closed without a key: {}",
                p.id,
                neurodata_abci::escrow::status_name(p.status)
            ),
            (None, None) => "validation requested; the purchase is not visible yet".into(),
        });
    }
    if !d.listed {
        return ValidationStep::Skip("not listed".into());
    }
    ValidationStep::Request
}

fn kind_name(subject: Subject) -> &'static str {
    match subject {
        Subject::Dataset(_) => "dataset",
        Subject::ModelListing(_) => "model listing",
    }
}

/// [`validation_step`] for `dataset` (as the chain has it; `None`: no such dataset) of dataset
/// id `id`, with `wanted` from `--validate-datasets`.
pub fn dataset_step(
    id: u64,
    dataset: Option<&pb::Dataset>,
    me: &[u8],
    org: &str,
    purchases: &[pb::Purchase],
    wanted: bool,
    journal: &DatasetJournal,
) -> ValidationStep {
    validation_step(
        Subject::Dataset(id),
        dataset.map(|d| Standing::of_dataset(d, org)),
        me,
        purchases,
        wanted,
        journal,
    )
}

/// What checking a dataset against its listing found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    /// The downloaded ciphertext hashes to the listing's CID.
    pub ciphertext_matches_cid: bool,
    /// The delivered key unwrapped and hashes to the listing's key commitment (not sent on
    /// chain: without it nothing below can match).
    pub key_matches: bool,
    /// The ciphertext decrypted completely with the key and the plaintext hashes to the
    /// listing's SHA-256.
    pub plaintext_matches: bool,
    /// Data rows read from the plaintext (0 when it did not decrypt; the rows before the first
    /// unreadable record when it did not read).
    pub rows: u64,
    /// The plaintext read in the listing's format and its header names the listing's schema
    /// columns, in order.
    pub schema_matches: bool,
    /// Why something did not match, for the logs.
    pub notes: Vec<String>,
}

impl Findings {
    /// Nothing checked yet: every finding false.
    fn none(ciphertext_matches_cid: bool, key_matches: bool) -> Findings {
        Findings {
            ciphertext_matches_cid,
            key_matches,
            plaintext_matches: false,
            rows: 0,
            schema_matches: false,
            notes: Vec::new(),
        }
    }

    /// The AttestDataset message for dataset `dataset_id`.
    pub fn message(&self, dataset_id: u64) -> pb::AttestDataset {
        pb::AttestDataset {
            dataset_id,
            ciphertext_matches_cid: self.ciphertext_matches_cid,
            plaintext_matches: self.plaintext_matches,
            rows: self.rows,
            schema_matches: self.schema_matches,
        }
    }

    /// Whether the chain counts these findings as positive for a listing of `listed_rows` rows
    /// (the rule of `AttestDataset`).
    pub fn positive(&self, listed_rows: u64) -> bool {
        self.ciphertext_matches_cid
            && self.plaintext_matches
            && self.schema_matches
            && self.rows == listed_rows
    }

    /// One line for the logs: `ciphertext ok, plaintext ok, 300 rows, schema ok`.
    pub fn summary(&self, listed_rows: u64) -> String {
        let ok = |b: bool, bad: &str| if b { "ok".to_owned() } else { bad.to_owned() };
        let rows = if self.rows == listed_rows {
            format!("{} rows", self.rows)
        } else {
            format!("{} rows, the listing says {listed_rows}", self.rows)
        };
        let key = if self.key_matches {
            ""
        } else {
            ", the delivered key does not match its commitment"
        };
        format!(
            "ciphertext {}, plaintext {}, {rows}, schema {}{key}",
            ok(self.ciphertext_matches_cid, "differs from its CID"),
            ok(self.plaintext_matches, "differs"),
            ok(self.schema_matches, "differs")
        )
    }
}

/// This machine could not check the dataset (its own disk failed): no finding, try again.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct CheckError {
    /// The file.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

/// The [`CheckError`] of an I/O failure on `path`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckError + '_ {
    move |source| CheckError {
        path: path.display().to_string(),
        source,
    }
}

/// The CID of a file's bytes, streamed.
pub(crate) fn file_cid(path: &Path) -> std::io::Result<Cid> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(Cid::from_digest(h.finalize().into()))
}

/// The tabular reader's format for a listing's format.
fn tabular_format(f: DataFormat) -> tabular::Format {
    match f {
        DataFormat::Csv => tabular::Format::Csv,
        DataFormat::JsonLines => tabular::Format::JsonLines,
        DataFormat::JsonArray => tabular::Format::JsonArray,
    }
}

/// Checks the downloaded `ciphertext` of `dataset` with the delivered key (`None`: it did not
/// unwrap or does not match the commitment). The plaintext is written under `work` and deleted
/// before this returns, whatever the outcome.
pub fn findings(
    dataset: &pb::Dataset,
    ciphertext: &Path,
    key: Option<&DataKey>,
    work: &Path,
) -> Result<Findings, CheckError> {
    let cid = file_cid(ciphertext).map_err(io(ciphertext))?;
    let cid_ok = dataset.cid.parse::<Cid>().is_ok_and(|listed| listed == cid);
    let mut found = Findings::none(cid_ok, false);
    if !cid_ok {
        found.notes.push(format!(
            "the ciphertext has CID {cid}, the listing says {}",
            dataset.cid
        ));
    }
    let Some(key) = key.filter(|k| k.commitment().as_slice() == dataset.key_commitment) else {
        found
            .notes
            .push("the delivered key does not match the listing's key commitment".into());
        return Ok(found);
    };
    found.key_matches = true;
    std::fs::create_dir_all(work).map_err(io(work))?;
    let plain = work.join("plaintext");
    let checked = check_plaintext(dataset, ciphertext, key, &plain, &mut found);
    let removed = match std::fs::remove_file(&plain) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    checked?;
    removed.map_err(io(&plain))?;
    Ok(found)
}

/// Decrypts into `plain`, then hashes and reads it; fills in `found`.
fn check_plaintext(
    dataset: &pb::Dataset,
    ciphertext: &Path,
    key: &DataKey,
    plain: &Path,
    found: &mut Findings,
) -> Result<(), CheckError> {
    let input = std::fs::File::open(ciphertext).map_err(io(ciphertext))?;
    let output = std::io::BufWriter::new(std::fs::File::create(plain).map_err(io(plain))?);
    let decrypted = match neurodata_crypto::stream::decrypt(input, output, key) {
        Ok(d) => d,
        Err(neurodata_crypto::CryptoError::Io(e)) => return Err(io(plain)(e)),
        Err(e) => {
            found
                .notes
                .push(format!("the ciphertext does not decrypt with the key: {e}"));
            return Ok(());
        }
    };
    found.plaintext_matches = decrypted.plaintext_sha256.as_slice() == dataset.plaintext_sha256;
    if !found.plaintext_matches {
        found.notes.push(format!(
            "the plaintext has SHA-256 {}, the listing says {}",
            hex::encode(decrypted.plaintext_sha256),
            hex::encode(&dataset.plaintext_sha256)
        ));
    }
    let Some(format) = DataFormat::of_listing(dataset.format).map(tabular_format) else {
        found.notes.push(format!(
            "the listing's format ({}) is not one this verifier reads",
            dataset.format
        ));
        return Ok(());
    };
    let file = std::io::BufReader::new(std::fs::File::open(plain).map_err(io(plain))?);
    let stream = match tabular::Stream::open(file, format) {
        Ok(s) => s,
        Err(tabular::ReadError::Io(e)) => return Err(io(plain)(e)),
        Err(e) => {
            found
                .notes
                .push(format!("the plaintext does not read as {format}: {e}"));
            return Ok(());
        }
    };
    let header: Vec<String> = stream.header().names().to_vec();
    let listed: Vec<&str> = dataset
        .schema
        .as_ref()
        .map(|s| s.columns.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let names_match = listed.iter().copied().eq(header.iter().map(String::as_str));
    if !names_match {
        found.notes.push(format!(
            "the header is {header:?}, the listing's schema names {listed:?}"
        ));
    }
    let mut rows = 0u64;
    let read = stream.rows(|_| -> Result<(), tabular::ReadError> {
        rows += 1;
        Ok(())
    });
    found.rows = rows;
    match read {
        Ok(_) => found.schema_matches = names_match,
        Err(tabular::ReadError::Io(e)) => return Err(io(plain)(e)),
        Err(e) => found.notes.push(format!(
            "the plaintext stops reading as {format} after {rows} rows: {e}"
        )),
    }
    if found.rows != dataset.rows {
        found.notes.push(format!(
            "{} rows read, the listing says {}",
            found.rows, dataset.rows
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurodata_crypto::stream::{DEFAULT_CHUNK_SIZE, encrypt};

    const ME: [u8; 32] = [5; 32];
    const ORG: &str = "validators";

    fn csv(rows: usize, header: &str) -> String {
        let mut s = format!("{header}\n");
        for i in 0..rows {
            s.push_str(&format!("{i},{}.5,\"name, {i}\"\n", i * 2));
        }
        s
    }

    /// A listing of `plain` as `ndctl dataset upload` makes it, with its ciphertext and key.
    fn listed(plain: &str, rows: u64, columns: &[&str]) -> (pb::Dataset, Vec<u8>, DataKey) {
        let key = DataKey::generate().unwrap();
        let mut sealed = Vec::new();
        let (sha, _) = encrypt(plain.as_bytes(), &mut sealed, &key, DEFAULT_CHUNK_SIZE).unwrap();
        let dataset = pb::Dataset {
            id: 3,
            cid: Cid::of(&sealed).to_string(),
            plaintext_sha256: sha.to_vec(),
            key_commitment: key.commitment().to_vec(),
            rows,
            schema: Some(pb::Schema {
                columns: columns
                    .iter()
                    .map(|n| pb::Column {
                        name: (*n).into(),
                        r#type: pb::ColumnType::String as i32,
                    })
                    .collect(),
            }),
            format: pb::DataFormat::Csv as i32,
            status: pb::DatasetStatus::Listed as i32,
            ..Default::default()
        };
        (dataset, sealed, key)
    }

    /// Checks `sealed` against `dataset` with `key` in a fresh directory; the work directory
    /// must hold no plaintext afterwards.
    fn check(dataset: &pb::Dataset, sealed: &[u8], key: Option<&DataKey>) -> Findings {
        let dir = tempfile::tempdir().unwrap();
        let ciphertext = dir.path().join("sealed");
        std::fs::write(&ciphertext, sealed).unwrap();
        let work = dir.path().join("work");
        let found = findings(dataset, &ciphertext, key, &work).unwrap();
        let left: Vec<_> = std::fs::read_dir(&work)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "plaintext left behind: {left:?}");
        found
    }

    #[test]
    fn a_good_csv_is_found_as_listed() {
        let plain = csv(300, "id,value,name");
        let (d, sealed, key) = listed(&plain, 300, &["id", "value", "name"]);
        let f = check(&d, &sealed, Some(&key));
        assert!(f.ciphertext_matches_cid && f.key_matches && f.plaintext_matches);
        assert!(f.schema_matches, "{:?}", f.notes);
        assert_eq!(f.rows, 300);
        assert!(f.positive(300));
        assert!(f.notes.is_empty(), "{:?}", f.notes);
        assert_eq!(
            f.summary(300),
            "ciphertext ok, plaintext ok, 300 rows, schema ok"
        );
        assert_eq!(
            f.message(3),
            pb::AttestDataset {
                dataset_id: 3,
                ciphertext_matches_cid: true,
                plaintext_matches: true,
                rows: 300,
                schema_matches: true,
            }
        );
    }

    #[test]
    fn a_tampered_ciphertext_matches_neither_its_cid_nor_decrypts() {
        let plain = csv(300, "id,value,name");
        let (d, mut sealed, key) = listed(&plain, 300, &["id", "value", "name"]);
        let middle = sealed.len() / 2;
        sealed[middle] ^= 1;
        let f = check(&d, &sealed, Some(&key));
        assert!(!f.ciphertext_matches_cid);
        assert!(f.key_matches);
        assert!(!f.plaintext_matches);
        assert_eq!(f.rows, 0);
        assert!(!f.schema_matches);
        assert!(!f.positive(300));
        assert!(
            f.notes.iter().any(|n| n.contains("does not decrypt")),
            "{:?}",
            f.notes
        );
    }

    #[test]
    fn a_row_count_other_than_the_listings_is_reported_as_read() {
        let plain = csv(300, "id,value,name");
        let (d, sealed, key) = listed(&plain, 250, &["id", "value", "name"]);
        let f = check(&d, &sealed, Some(&key));
        assert!(f.ciphertext_matches_cid && f.plaintext_matches && f.schema_matches);
        assert_eq!(f.rows, 300, "the rows found, not the rows listed");
        assert!(
            !f.positive(250),
            "the chain counts a wrong row count as negative"
        );
        assert_eq!(
            f.summary(250),
            "ciphertext ok, plaintext ok, 300 rows, the listing says 250, schema ok"
        );
    }

    #[test]
    fn a_header_other_than_the_schema_is_a_schema_mismatch() {
        let plain = csv(300, "id,value,label");
        let (d, sealed, key) = listed(&plain, 300, &["id", "value", "name"]);
        let f = check(&d, &sealed, Some(&key));
        assert!(f.ciphertext_matches_cid && f.plaintext_matches);
        assert_eq!(f.rows, 300);
        assert!(!f.schema_matches);
        assert!(!f.positive(300));
        // Same names in another order differ too.
        let (d, sealed, key) = listed(&csv(3, "value,id,name"), 3, &["id", "value", "name"]);
        assert!(!check(&d, &sealed, Some(&key)).schema_matches);
    }

    #[test]
    fn a_key_other_than_the_commitment_opens_nothing() {
        let plain = csv(10, "id,value,name");
        let (d, sealed, _) = listed(&plain, 10, &["id", "value", "name"]);
        let other = DataKey::generate().unwrap();
        for key in [Some(&other), None] {
            let f = check(&d, &sealed, key);
            assert!(
                f.ciphertext_matches_cid,
                "the ciphertext is checked regardless"
            );
            assert!(!f.key_matches && !f.plaintext_matches && !f.schema_matches);
            assert_eq!(f.rows, 0);
        }
    }

    #[test]
    fn a_plaintext_other_than_the_listed_hash_is_still_read() {
        let plain = csv(20, "id,value,name");
        let (mut d, sealed, key) = listed(&plain, 20, &["id", "value", "name"]);
        d.plaintext_sha256 = vec![0; 32];
        let f = check(&d, &sealed, Some(&key));
        assert!(f.ciphertext_matches_cid && !f.plaintext_matches);
        assert_eq!(f.rows, 20);
        assert!(f.schema_matches);
    }

    #[test]
    fn an_unreadable_plaintext_counts_the_rows_before_the_break_and_fails_the_schema() {
        let plain = "id,value,name\n1,2,a\n3,4\n5,6,c\n";
        let (d, sealed, key) = listed(plain, 3, &["id", "value", "name"]);
        let f = check(&d, &sealed, Some(&key));
        assert!(f.plaintext_matches, "the bytes are the listed ones");
        assert_eq!(f.rows, 1);
        assert!(!f.schema_matches);
    }

    #[test]
    fn json_lines_are_read_in_the_listings_format() {
        let plain = "{\"b\":1,\"a\":\"x\"}\n{\"b\":2,\"a\":\"y\"}\n";
        let (mut d, sealed, key) = listed(plain, 2, &["a", "b"]);
        d.format = pb::DataFormat::JsonLines as i32;
        let f = check(&d, &sealed, Some(&key));
        assert!(f.positive(2), "{:?}", f.notes);
        d.format = pb::DataFormat::Csv as i32;
        assert!(!check(&d, &sealed, Some(&key)).schema_matches);
    }

    fn dataset() -> pb::Dataset {
        pb::Dataset {
            id: 3,
            rows: 300,
            status: pb::DatasetStatus::Listed as i32,
            ..Default::default()
        }
    }

    fn purchase(id: u64, status: pb::PurchaseStatus) -> pb::Purchase {
        pb::Purchase {
            id,
            dataset_id: 3,
            kind: pb::PurchaseKind::Validation as i32,
            buyer: ME.to_vec(),
            buyer_org: ORG.into(),
            provider_org: "provider".into(),
            status: status as i32,
            key_recipient: if status == pb::PurchaseStatus::AwaitingKey {
                Vec::new()
            } else {
                ME.to_vec()
            },
            ..Default::default()
        }
    }

    fn attested(key_matches: bool) -> DatasetJournal {
        DatasetJournal {
            requested: Some(Requested::default()),
            attested: Some(Attested {
                purchase_id: 7,
                height: 40,
                findings: Findings::none(true, key_matches),
            }),
            confirmed: None,
        }
    }

    fn step(
        d: &pb::Dataset,
        ps: &[pb::Purchase],
        wanted: bool,
        j: &DatasetJournal,
    ) -> ValidationStep {
        dataset_step(d.id, Some(d), &ME, ORG, ps, wanted, j)
    }

    #[test]
    fn a_wanted_dataset_is_requested_once() {
        let d = dataset();
        let none = DatasetJournal::default();
        assert_eq!(step(&d, &[], true, &none), ValidationStep::Request);
        assert!(matches!(
            step(&d, &[], false, &none),
            ValidationStep::Skip(_)
        ));
        let requested = DatasetJournal {
            requested: Some(Requested {
                height: 12,
                refused: None,
            }),
            ..Default::default()
        };
        assert!(matches!(
            step(&d, &[], true, &requested),
            ValidationStep::Skip(_)
        ));
        // The request was refunded (no key in time): not asked again.
        let refunded = [purchase(7, pb::PurchaseStatus::Refunded)];
        assert!(matches!(
            step(&d, &refunded, true, &requested),
            ValidationStep::Skip(_)
        ));
        let refused = DatasetJournal {
            requested: Some(Requested {
                height: 0,
                refused: Some("not an operator".into()),
            }),
            ..Default::default()
        };
        assert!(matches!(
            step(&d, &[], true, &refused),
            ValidationStep::Skip(_)
        ));
    }

    #[test]
    fn verified_delisted_or_attested_datasets_are_not_requested() {
        let none = DatasetJournal::default();
        let mut verified = dataset();
        verified.verified = true;
        assert!(matches!(
            step(&verified, &[], true, &none),
            ValidationStep::Skip(_)
        ));
        let mut delisted = dataset();
        delisted.status = pb::DatasetStatus::Delisted as i32;
        assert!(matches!(
            step(&delisted, &[], true, &none),
            ValidationStep::Skip(_)
        ));
        let mut ours = dataset();
        ours.attestations.push(pb::Attestation {
            org_id: ORG.into(),
            ..Default::default()
        });
        assert_eq!(step(&ours, &[], true, &none), ValidationStep::Done);
        assert!(matches!(
            dataset_step(3, None, &ME, ORG, &[], true, &none),
            ValidationStep::Skip(_)
        ));
    }

    #[test]
    fn a_delivered_key_is_attested_then_confirmed_then_done() {
        let d = dataset();
        let none = DatasetJournal::default();
        let awaiting = [purchase(7, pb::PurchaseStatus::AwaitingKey)];
        assert!(matches!(
            step(&d, &awaiting, false, &none),
            ValidationStep::Skip(_)
        ));
        let delivered = [purchase(7, pb::PurchaseStatus::KeyDelivered)];
        assert_eq!(
            step(&d, &delivered, false, &none),
            ValidationStep::Attest(7),
            "a validation purchase is attested whether or not the flag names its dataset"
        );
        let mut j = attested(true);
        assert_eq!(step(&d, &delivered, false, &j), ValidationStep::Confirm(7));
        j.confirmed = Some(7);
        assert_eq!(step(&d, &delivered, false, &j), ValidationStep::Done);
        // Crashed after ConfirmAccess committed, before the journal entry: the chain decides.
        j.confirmed = None;
        let confirmed = [purchase(7, pb::PurchaseStatus::Confirmed)];
        assert_eq!(step(&d, &confirmed, false, &j), ValidationStep::Done);
        // Released while we were away, never attested: still attested.
        let released = [purchase(7, pb::PurchaseStatus::Released)];
        assert_eq!(
            step(&d, &released, false, &DatasetJournal::default()),
            ValidationStep::Attest(7)
        );
    }

    #[test]
    fn findings_are_sent_once_per_org() {
        let delivered = [purchase(7, pb::PurchaseStatus::KeyDelivered)];
        let mut d = dataset();
        d.attestations.push(pb::Attestation {
            org_id: "someone-else".into(),
            ..Default::default()
        });
        assert_eq!(
            step(&d, &delivered, false, &DatasetJournal::default()),
            ValidationStep::Attest(7)
        );
        d.attestations.push(pb::Attestation {
            org_id: ORG.into(),
            ..Default::default()
        });
        assert_eq!(
            step(&d, &delivered, false, &DatasetJournal::default()),
            ValidationStep::Confirm(7),
            "another operator of the org attested: only the purchase is closed"
        );
        let mut verified = dataset();
        verified.verified = true;
        assert_eq!(
            step(&verified, &delivered, false, &DatasetJournal::default()),
            ValidationStep::Confirm(7)
        );
    }

    #[test]
    fn a_key_that_did_not_open_the_data_is_not_confirmed() {
        let delivered = [purchase(7, pb::PurchaseStatus::KeyDelivered)];
        assert_eq!(
            step(&dataset(), &delivered, false, &attested(false)),
            ValidationStep::Done
        );
    }

    #[test]
    fn only_our_newest_validation_purchase_counts() {
        let d = dataset();
        let none = DatasetJournal::default();
        let mut sale = purchase(9, pb::PurchaseStatus::KeyDelivered);
        sale.kind = pb::PurchaseKind::Sale as i32;
        let mut theirs = purchase(10, pb::PurchaseStatus::KeyDelivered);
        theirs.buyer = vec![6; 32];
        let mut other_dataset = purchase(11, pb::PurchaseStatus::KeyDelivered);
        other_dataset.dataset_id = 4;
        assert_eq!(
            step(&d, &[sale, theirs, other_dataset], false, &none),
            ValidationStep::Skip("not in --validate-datasets".into())
        );
        let old = purchase(2, pb::PurchaseStatus::Refunded);
        let new = purchase(8, pb::PurchaseStatus::KeyDelivered);
        assert_eq!(
            step(&d, &[new, old], false, &none),
            ValidationStep::Attest(8)
        );
    }

    #[test]
    fn a_key_wrapped_to_another_identity_is_not_ours_to_judge() {
        let mut p = purchase(7, pb::PurchaseStatus::KeyDelivered);
        p.key_recipient = vec![6; 32];
        assert!(matches!(
            step(&dataset(), &[p], false, &DatasetJournal::default()),
            ValidationStep::Skip(_)
        ));
    }

    #[test]
    fn a_dataset_journal_round_trips_under_its_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let dd = ValidationDir::new(dir.path(), Subject::Dataset(3));
        assert_eq!(dd.load().unwrap(), DatasetJournal::default());
        let j = attested(true);
        dd.save(&j).unwrap();
        assert_eq!(dd.load().unwrap(), j);
        assert!(dd.path.ends_with("datasets/3"));
        assert!(
            crate::journal::JobDir::list(dir.path()).is_empty(),
            "not taken for a job directory"
        );
        std::fs::create_dir_all(dd.data_dir()).unwrap();
        dd.remove_data().unwrap();
        assert!(!dd.data_dir().exists());
        dd.remove_data().unwrap();
    }
}
