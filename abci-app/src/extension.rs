//! Validators' attestations on the wire: what a validator extends its precommit with, and the
//! signed extensions its successor as proposer injects into the next block.
//!
//! The path of one verdict:
//! 1. A verifier process beside the abci-app re-runs its segments and leaves a [`VerdictFile`]
//!    in the validator's inbox directory ([`VerdictFile::write_atomically`]); a score of a model
//!    on a hidden evaluation split is an [`EvaluationVerdictFile`] in the same inbox.
//! 2. ExtendVote reads the inbox ([`VerdictFile::read_all`]) and asks the committed state what to
//!    say ([`vote_extension`], over [`training::votes_to_extend`]). VerifyVoteExtension checks
//!    what others say with stateless checks only ([`training::check_extension`]), so honest
//!    validators never disagree about an extension.
//! 3. The next proposer finds the extensions, each signed by CometBFT, in its `local_last_commit`
//!    and puts them, signatures and all, in front of its block ([`injected_votes_tx`]): FinalizeBlock
//!    does not carry extensions, so the block must.
//! 4. ProcessProposal and FinalizeBlock verify the injected tx against the app's validator set
//!    ([`verify_injected`]: CometBFT's sign bytes, Ed25519, more than 2/3 of the power) and
//!    FinalizeBlock records the votes ([`deliver_injected`], over [`training::apply_votes`]).
//!
//! The inbox format and the validator key file are plain types usable without the `server`
//! feature (the verifier process writes the inbox); signatures need `server` (tendermint-proto).

use std::path::{Path, PathBuf};

use neurodata_proto::chain::v1 as pb;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::TxError;
use crate::models::evaluation::EvaluationVerdict;
use crate::state::StateRead;
use crate::training::{self, Verdict};

/// Largest verdict file read from the inbox.
const MAX_VERDICT_FILE_BYTES: u64 = 64 * 1024;

/// A verifier's verdict on one job, as it leaves it in the validator's inbox directory, one file
/// per job named `job-<id>.json`:
/// `{"job_id":N,"result_digest":"<hex32>","matches":bool,"segments_digest":"<hex32>","salt":"<hex32>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictFile {
    /// The job.
    pub job_id: u64,
    /// The result digest the verdict is about (hex, 32 bytes).
    #[serde(with = "hex32")]
    pub result_digest: [u8; 32],
    /// Every sampled segment and the final model reproduced.
    pub matches: bool,
    /// SHA-256 over the checkpoint digests the verifier computed (hex, 32 bytes).
    #[serde(with = "hex32")]
    pub segments_digest: [u8; 32],
    /// Random, kept secret until the reveal (hex, 32 bytes). Losing it loses the reveal, so the
    /// verifier writes it before the validator can commit to it.
    #[serde(with = "hex32")]
    pub salt: [u8; 32],
}

impl VerdictFile {
    /// The file name of job `job_id`'s verdict.
    pub fn file_name(job_id: u64) -> String {
        format!("job-{job_id}.json")
    }

    /// Writes the verdict into `dir` (created if missing) as `job-<id>.json`, atomically: a
    /// temporary file, flushed to disk, renamed over the old one, so the app never reads half a
    /// file. Returns the path written.
    pub fn write_atomically(&self, dir: &Path) -> std::io::Result<PathBuf> {
        write_json_atomically(dir, &Self::file_name(self.job_id), self)
    }

    /// Every well-formed verdict in `dir`, ascending by job id. A missing directory holds none.
    /// Files that are not `job-<id>.json` are ignored (the writer's temporary files and
    /// evaluation verdicts among them); a malformed one, or one whose `job_id` is not its
    /// name's, is skipped and logged.
    pub fn read_all(dir: &Path) -> std::io::Result<Vec<VerdictFile>> {
        read_inbox(dir, "job-", |v: &VerdictFile| v.job_id)
    }
}

/// A verifier's score of a model version on a hidden evaluation split, as it leaves it in the
/// validator's inbox directory beside the job verdicts, one file per evaluation named
/// `eval-<id>.json`:
/// `{"evaluation_id":N,"subject_digest":"<hex32>","matches":bool,"score_json":"...","salt":"<hex32>"}`.
/// `matches` is false when the model could not be scored (then `score_json` is usually empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluationVerdictFile {
    /// The evaluation.
    pub evaluation_id: u64,
    /// The evaluation's subject digest the score is about (hex, 32 bytes).
    #[serde(with = "hex32")]
    pub subject_digest: [u8; 32],
    /// The model loaded, matched its hashes and ran on the split.
    pub matches: bool,
    /// The canonical score JSON (at most
    /// [`MAX_SCORE_BYTES`](crate::models::evaluation::MAX_SCORE_BYTES); a longer one is never
    /// voted).
    pub score_json: String,
    /// Random, kept secret until the reveal (hex, 32 bytes); written before the validator can
    /// commit to it, as for a job verdict.
    #[serde(with = "hex32")]
    pub salt: [u8; 32],
}

impl EvaluationVerdictFile {
    /// The file name of evaluation `evaluation_id`'s verdict.
    pub fn file_name(evaluation_id: u64) -> String {
        format!("eval-{evaluation_id}.json")
    }

    /// Writes the verdict into `dir` (created if missing) as `eval-<id>.json`, atomically (as
    /// [`VerdictFile::write_atomically`]). Returns the path written.
    pub fn write_atomically(&self, dir: &Path) -> std::io::Result<PathBuf> {
        write_json_atomically(dir, &Self::file_name(self.evaluation_id), self)
    }

    /// Every well-formed evaluation verdict in `dir`, ascending by evaluation id (the rules of
    /// [`VerdictFile::read_all`], for `eval-<id>.json`).
    pub fn read_all(dir: &Path) -> std::io::Result<Vec<EvaluationVerdictFile>> {
        read_inbox(dir, "eval-", |v: &EvaluationVerdictFile| v.evaluation_id)
    }
}

impl From<EvaluationVerdictFile> for EvaluationVerdict {
    fn from(f: EvaluationVerdictFile) -> Self {
        EvaluationVerdict {
            evaluation_id: f.evaluation_id,
            subject_digest: f.subject_digest,
            matches: f.matches,
            score_json: f.score_json,
            salt: f.salt,
        }
    }
}

/// Writes `value` as JSON to `dir/name` through a temporary file, flushed, renamed over the old
/// one, the directory synced: a reader sees the old file or the new one, never half of one.
fn write_json_atomically<T: Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename itself survives a crash once the directory is synced.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Every well-formed `<prefix><id>.json` in `dir` whose own id (`id_of`) is its name's,
/// ascending by id; other files are ignored, malformed or misnamed ones skipped and logged.
fn read_inbox<T: serde::de::DeserializeOwned>(
    dir: &Path,
    prefix: &str,
    id_of: impl Fn(&T) -> u64,
) -> std::io::Result<Vec<T>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut verdicts = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix)?.strip_suffix(".json"))
            .and_then(|id| id.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        match read_one::<T>(&path) {
            Ok(v) if id_of(&v) == id => verdicts.push(v),
            Ok(v) => tracing::warn!(
                path = %path.display(),
                id = id_of(&v),
                "verdict file names another id; skipped"
            ),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "malformed verdict file; skipped")
            }
        }
    }
    verdicts.sort_by_key(|v| id_of(v));
    Ok(verdicts)
}

fn read_one<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > MAX_VERDICT_FILE_BYTES {
        return Err(format!(
            "not a file of at most {MAX_VERDICT_FILE_BYTES} bytes"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

impl From<VerdictFile> for Verdict {
    fn from(f: VerdictFile) -> Self {
        Verdict {
            job_id: f.job_id,
            result_digest: f.result_digest,
            matches: f.matches,
            segments_digest: f.segments_digest,
            salt: f.salt,
        }
    }
}

impl From<&Verdict> for VerdictFile {
    fn from(v: &Verdict) -> Self {
        VerdictFile {
            job_id: v.job_id,
            result_digest: v.result_digest,
            matches: v.matches,
            segments_digest: v.segments_digest,
            salt: v.salt,
        }
    }
}

/// 32 bytes as 64 hex digits in JSON.
mod hex32 {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let bytes = hex::decode(&s).map_err(serde::de::Error::custom)?;
        <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            serde::de::Error::custom(format!("expected 32 bytes, got {}", bytes.len()))
        })
    }
}

/// What a validator's app needs to extend its votes: who it is and where its verdicts arrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attester {
    /// The validator's CometBFT address.
    pub address: [u8; 20],
    /// The verdict inbox.
    pub verdicts: PathBuf,
}

/// A CometBFT `priv_validator_key.json` that does not give a usable Ed25519 validator address.
#[derive(Debug, thiserror::Error)]
#[error("validator key file {path}: {reason}")]
pub struct KeyFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// The validator address in a CometBFT `priv_validator_key.json` (`"address"`: hex;
/// `"pub_key": {"type": "tendermint/PubKeyEd25519", "value": <base64>}`), checked to be the
/// address of the key. Reads the public half only.
pub fn key_file_address(path: &Path) -> Result<[u8; 20], KeyFileError> {
    use base64::Engine as _;
    let fail = |reason: String| KeyFileError {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("not JSON: {e}")))?;
    let key_type = json["pub_key"]["type"].as_str().unwrap_or_default();
    if key_type != "tendermint/PubKeyEd25519" {
        return Err(fail(format!(
            "pub_key.type is {key_type:?}; only tendermint/PubKeyEd25519 validators attest"
        )));
    }
    let key = json["pub_key"]["value"]
        .as_str()
        .ok_or_else(|| fail("no pub_key.value".into()))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|e| fail(format!("pub_key.value is not base64: {e}")))?;
    if key.len() != 32 {
        return Err(fail(format!(
            "pub_key.value is {} bytes, not 32",
            key.len()
        )));
    }
    let address = training::attest::validator_address(&key);
    if let Some(stated) = json["address"].as_str() {
        let stated = hex::decode(stated).map_err(|e| fail(format!("address is not hex: {e}")))?;
        if stated != address {
            return Err(fail(format!(
                "address {} is not the address of pub_key ({})",
                hex::encode_upper(&stated),
                hex::encode_upper(address)
            )));
        }
    }
    Ok(address)
}

/// Why a validator extends its vote with nothing this time.
#[derive(Debug, thiserror::Error)]
pub enum ExtendError {
    /// The verdict inbox could not be listed.
    #[error("reading the verdict inbox {dir}: {error}")]
    Inbox {
        /// The inbox.
        dir: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The committed state could not be read.
    #[error("reading the committed state: {0}")]
    State(TxError),
    /// The extension built would not pass the others' VerifyVoteExtension (a bug: never sent).
    #[error("the extension built fails its own check: {0}")]
    SelfCheck(TxError),
}

/// The extension validator `attester` adds to its precommit now: its job and evaluation
/// verdicts' commits and reveals the committed `state` asks for, or empty bytes when there is
/// nothing to say.
pub fn vote_extension<S: StateRead>(
    state: &S,
    attester: &Attester,
) -> Result<Vec<u8>, ExtendError> {
    let inbox = |error| ExtendError::Inbox {
        dir: attester.verdicts.clone(),
        error,
    };
    let verdicts: Vec<Verdict> = VerdictFile::read_all(&attester.verdicts)
        .map_err(inbox)?
        .into_iter()
        .map(Verdict::from)
        .collect();
    let evaluations: Vec<EvaluationVerdict> = EvaluationVerdictFile::read_all(&attester.verdicts)
        .map_err(inbox)?
        .into_iter()
        .map(EvaluationVerdict::from)
        .collect();
    if verdicts.is_empty() && evaluations.is_empty() {
        return Ok(Vec::new());
    }
    let votes = training::votes_to_extend(state, &attester.address, &verdicts, &evaluations)
        .map_err(ExtendError::State)?;
    if votes.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = pb::VoteExtension { votes }.encode_to_vec();
    training::check_extension(&bytes).map_err(ExtendError::SelfCheck)?;
    Ok(bytes)
}

/// Whether `tx` is an injected-votes tx (starts with [`training::INJECTED_MARKER`]): written by
/// proposers only, never a user's tx.
pub fn is_injected(tx: &[u8]) -> bool {
    tx.starts_with(&training::INJECTED_MARKER)
}

#[cfg(feature = "server")]
pub use signed::*;

/// Signatures: CometBFT's sign bytes, verification, and the injected tx in and out of blocks.
#[cfg(feature = "server")]
mod signed {
    use std::collections::{BTreeMap, BTreeSet};

    use neurodata_proto::chain::v1 as pb;
    use openssl::pkey::{Id, PKey};
    use openssl::sign::Verifier;
    use prost::Message as _;
    use tendermint::abci::types::{BlockSignatureInfo, ExtendedCommitInfo};
    use tendermint::block::BlockIdFlag;

    use crate::TxError;
    use crate::app::{BlockCtx, TxOutcome};
    use crate::state::{StateDelta, StateError, StateRead};
    use crate::training::{self, CastVote, INJECTED_MARKER};
    use crate::tx::ExecCtx;

    /// The ABCI codespace of a refused injected-votes tx.
    pub const CODESPACE: &str = "extension";

    /// Why an injected-votes tx is invalid.
    #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
    pub enum InjectError {
        /// The tx does not start with the marker.
        #[error("not an injected-votes tx (no marker)")]
        NoMarker,
        /// The bytes after the marker are not an `InjectedVotes`.
        #[error("injected votes do not decode: {0}")]
        Undecodable(String),
        /// The votes are not those of the previous height.
        #[error("injected votes are for height {got}; this block needs those of height {expected}")]
        WrongHeight {
            /// The votes' height.
            got: i64,
            /// This block's height - 1.
            expected: u64,
        },
        /// A vote's validator is not a 20-byte address.
        #[error("injected vote {index} names a validator of {len} bytes, not a 20-byte address")]
        BadAddress {
            /// Position of the vote.
            index: usize,
            /// Length of its validator field.
            len: usize,
        },
        /// One validator's extension twice.
        #[error("validator {0} has two injected votes")]
        DuplicateValidator(String),
        /// A signature does not verify over CometBFT's sign bytes with the validator's key.
        #[error("the extension signature of validator {0} does not verify")]
        BadSignature(String),
        /// A signed extension fails VerifyVoteExtension's checks.
        #[error("the extension of validator {validator} is malformed: {reason}")]
        BadExtension {
            /// The validator.
            validator: String,
            /// What `check_extension` said.
            reason: String,
        },
        /// The signed votes do not carry more than 2/3 of the voting power.
        #[error("injected votes carry {signed} of {total} voting power; more than 2/3 is needed")]
        InsufficientPower {
            /// Power of the known validators whose votes verified.
            signed: u128,
            /// The app's total validator power.
            total: u128,
        },
        /// An injected-votes tx anywhere but first in the block.
        #[error("tx {index} is an injected-votes tx, which only the first tx of a block may be")]
        NotFirst {
            /// Its position.
            index: usize,
        },
    }

    impl InjectError {
        /// Stable code for the ABCI result (codespace [`CODESPACE`]), 240..260.
        pub fn code(&self) -> u32 {
            match self {
                InjectError::NoMarker => 240,
                InjectError::Undecodable(_) => 241,
                InjectError::WrongHeight { .. } => 242,
                InjectError::BadAddress { .. } => 243,
                InjectError::DuplicateValidator(_) => 244,
                InjectError::BadSignature(_) => 245,
                InjectError::BadExtension { .. } => 246,
                InjectError::InsufficientPower { .. } => 247,
                InjectError::NotFirst { .. } => 248,
            }
        }
    }

    /// What CometBFT v0.38 signs for a vote extension (`types.VoteExtensionSignBytes`): the
    /// length-delimited (uvarint length prefix) protobuf `CanonicalVoteExtension { extension,
    /// height (sfixed64), round (sfixed64), chain_id }`.
    pub fn sign_bytes(chain_id: &str, height: i64, round: i64, extension: &[u8]) -> Vec<u8> {
        tendermint_proto::v0_38::types::CanonicalVoteExtension {
            extension: extension.to_vec(),
            height,
            round,
            chain_id: chain_id.to_owned(),
        }
        .encode_length_delimited_to_vec()
    }

    /// The injected-votes tx a proposer at `block_height` puts first: every vote of the last
    /// commit for the block with an extension signature, with its extension. None when no
    /// extension has anything in it (an empty extension says nothing, and its block stays as it
    /// was), or before height 2.
    pub fn injected_votes_tx(block_height: u64, commit: &ExtendedCommitInfo) -> Option<Vec<u8>> {
        if commit.votes.iter().all(|v| v.vote_extension.is_empty()) {
            return None;
        }
        let height = i64::try_from(block_height.checked_sub(1)?).ok()?;
        let votes = commit
            .votes
            .iter()
            .filter(|v| matches!(v.sig_info, BlockSignatureInfo::Flag(BlockIdFlag::Commit)))
            .filter_map(|v| {
                Some(pb::InjectedVote {
                    validator: v.validator.address.to_vec(),
                    extension: v.vote_extension.to_vec(),
                    signature: v.extension_signature.as_ref()?.as_bytes().to_vec(),
                })
            })
            .collect();
        let injected = pb::InjectedVotes {
            height,
            round: i64::from(commit.round.value()),
            votes,
        };
        let mut tx = INJECTED_MARKER.to_vec();
        injected.encode(&mut tx).ok()?;
        Some(tx)
    }

    fn verify_ed25519(pub_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        PKey::public_key_from_raw_bytes(pub_key, Id::ED25519)
            .and_then(|key| Verifier::new_without_digest(&key)?.verify_oneshot(signature, message))
            .unwrap_or(false)
    }

    /// Verifies an injected-votes tx of block `block_height` against the app's validator set and
    /// returns the votes to record. Checks: the marker, the encoding, the height (the previous
    /// block's), one vote per validator, each known validator's signature over CometBFT's sign
    /// bytes and its extension's stateless checks, and that the known validators' votes carry
    /// more than 2/3 of `validators`' power. Votes of validators the app does not know (one
    /// removed in the last two blocks still signs) are skipped, not fatal. Empty extensions
    /// count for power but yield no votes.
    pub fn verify_injected(
        bytes: &[u8],
        chain_id: &str,
        block_height: u64,
        validators: &[pb::Validator],
    ) -> Result<Vec<CastVote>, InjectError> {
        let body = bytes
            .strip_prefix(&INJECTED_MARKER)
            .ok_or(InjectError::NoMarker)?;
        let injected =
            pb::InjectedVotes::decode(body).map_err(|e| InjectError::Undecodable(e.to_string()))?;
        let expected = block_height.saturating_sub(1);
        if block_height < 2 || u64::try_from(injected.height).ok() != Some(expected) {
            return Err(InjectError::WrongHeight {
                got: injected.height,
                expected,
            });
        }
        let known: BTreeMap<[u8; 20], (&[u8], u128)> = validators
            .iter()
            .filter_map(|v| {
                let power = u128::try_from(v.power).ok().filter(|p| *p > 0)?;
                Some((
                    training::attest::validator_address(&v.pub_key),
                    (v.pub_key.as_slice(), power),
                ))
            })
            .collect();
        let total: u128 = known.values().map(|(_, p)| p).sum();
        let mut seen = BTreeSet::new();
        let mut signed: u128 = 0;
        let mut cast = Vec::new();
        for (index, vote) in injected.votes.iter().enumerate() {
            let address = <[u8; 20]>::try_from(vote.validator.as_slice()).map_err(|_| {
                InjectError::BadAddress {
                    index,
                    len: vote.validator.len(),
                }
            })?;
            let name = hex::encode_upper(address);
            if !seen.insert(address) {
                return Err(InjectError::DuplicateValidator(name));
            }
            let Some((pub_key, power)) = known.get(&address) else {
                continue;
            };
            let message = sign_bytes(chain_id, injected.height, injected.round, &vote.extension);
            if !verify_ed25519(pub_key, &message, &vote.signature) {
                return Err(InjectError::BadSignature(name));
            }
            signed += power;
            if vote.extension.is_empty() {
                continue;
            }
            let ext = training::check_extension(&vote.extension).map_err(|e| {
                InjectError::BadExtension {
                    validator: name.clone(),
                    reason: e.to_string(),
                }
            })?;
            if !ext.votes.is_empty() {
                cast.push(CastVote {
                    validator: address,
                    votes: ext.votes,
                });
            }
        }
        if signed * 3 <= total * 2 {
            return Err(InjectError::InsufficientPower { signed, total });
        }
        Ok(cast)
    }

    /// Runs a block's injected-votes tx (its first tx) on the block's state: verified again (a
    /// failing one changes nothing and gets its error's code), then its votes recorded. A store
    /// failure is the node's, returned as an error.
    pub fn deliver_injected<S: StateRead>(
        block_state: &mut StateDelta<S>,
        bytes: &[u8],
        block: &BlockCtx,
        validators: &[pb::Validator],
    ) -> Result<TxOutcome, StateError> {
        let cast = match verify_injected(bytes, &block.chain_id, block.height, validators) {
            Ok(cast) => cast,
            Err(e) => {
                tracing::warn!(height = block.height, error = %e, "injected votes refused");
                return Ok(TxOutcome {
                    code: e.code(),
                    codespace: CODESPACE,
                    log: e.to_string(),
                    events: vec![],
                });
            }
        };
        let ctx = ExecCtx {
            height: block.height,
            time: block.time,
            params: block.params.clone(),
        };
        let mut fork = StateDelta::new(&*block_state);
        match training::apply_votes(&mut fork, &cast, &ctx) {
            Ok(()) => {
                let changes = fork.into_changes();
                let events = changes.events.clone();
                block_state.apply(changes);
                if !cast.is_empty() {
                    tracing::info!(
                        height = block.height,
                        validators = cast.len(),
                        votes = cast.iter().map(|c| c.votes.len()).sum::<usize>(),
                        "injected votes recorded"
                    );
                }
                Ok(TxOutcome {
                    code: 0,
                    codespace: "",
                    log: String::new(),
                    events,
                })
            }
            Err(TxError::State(e)) => Err(e),
            Err(e) => Ok(TxOutcome::rejected(&e)),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use openssl::pkey::Private;

        const CHAIN: &str = "neurodata-test";

        struct Key {
            key: PKey<Private>,
            validator: pb::Validator,
        }

        impl Key {
            fn new(power: i64) -> Self {
                let key = PKey::generate_ed25519().unwrap();
                let validator = pb::Validator {
                    pub_key: key.raw_public_key().unwrap(),
                    power,
                    ..Default::default()
                };
                Key { key, validator }
            }

            fn address(&self) -> [u8; 20] {
                training::attest::validator_address(&self.validator.pub_key)
            }

            fn sign(&self, height: i64, round: i64, extension: &[u8]) -> Vec<u8> {
                openssl::sign::Signer::new_without_digest(&self.key)
                    .unwrap()
                    .sign_oneshot_to_vec(&sign_bytes(CHAIN, height, round, extension))
                    .unwrap()
            }

            fn vote(&self, height: i64, extension: &[u8]) -> pb::InjectedVote {
                pb::InjectedVote {
                    validator: self.address().to_vec(),
                    extension: extension.to_vec(),
                    signature: self.sign(height, 0, extension),
                }
            }
        }

        fn commit(job_id: u64) -> Vec<u8> {
            pb::VoteExtension {
                votes: vec![pb::JobVote {
                    job_id,
                    step: Some(pb::job_vote::Step::Commit(vec![7; 32])),
                    evaluation_id: 0,
                }],
            }
            .encode_to_vec()
        }

        fn tx(height: i64, votes: Vec<pb::InjectedVote>) -> Vec<u8> {
            let mut tx = INJECTED_MARKER.to_vec();
            tx.extend(
                pb::InjectedVotes {
                    height,
                    round: 0,
                    votes,
                }
                .encode_to_vec(),
            );
            tx
        }

        fn keys(n: usize) -> (Vec<Key>, Vec<pb::Validator>) {
            let keys: Vec<Key> = (0..n).map(|_| Key::new(10)).collect();
            let set = keys.iter().map(|k| k.validator.clone()).collect();
            (keys, set)
        }

        #[test]
        fn sign_bytes_are_cometbft_length_delimited_canonical_extension() {
            // Field 1 bytes, 2 and 3 sfixed64, 4 string, behind a uvarint length.
            let b = sign_bytes("c", 5, 1, b"x");
            let body = [
                0x0a, 1, b'x', 0x11, 5, 0, 0, 0, 0, 0, 0, 0, 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x22, 1,
                b'c',
            ];
            assert_eq!(b[0] as usize, body.len(), "uvarint length prefix");
            assert_eq!(&b[1..], &body[..]);
        }

        #[test]
        fn signed_votes_of_more_than_two_thirds_verify() {
            let (k, set) = keys(4);
            let votes = vec![
                k[0].vote(9, &commit(1)),
                k[1].vote(9, &commit(2)),
                k[2].vote(9, b""),
            ];
            let cast = verify_injected(&tx(9, votes), CHAIN, 10, &set).unwrap();
            assert_eq!(
                cast,
                vec![
                    CastVote {
                        validator: k[0].address(),
                        votes: pb::VoteExtension::decode(commit(1).as_slice())
                            .unwrap()
                            .votes,
                    },
                    CastVote {
                        validator: k[1].address(),
                        votes: pb::VoteExtension::decode(commit(2).as_slice())
                            .unwrap()
                            .votes,
                    },
                ],
                "the empty extension counts for power but casts nothing"
            );
        }

        #[test]
        fn tampered_extension_is_refused() {
            let (k, set) = keys(3);
            let mut v = k[0].vote(9, &commit(1));
            v.extension = commit(2);
            let votes = vec![v, k[1].vote(9, b""), k[2].vote(9, b"")];
            assert_eq!(
                verify_injected(&tx(9, votes), CHAIN, 10, &set),
                Err(InjectError::BadSignature(hex::encode_upper(k[0].address())))
            );
        }

        #[test]
        fn tampered_signature_is_refused() {
            let (k, set) = keys(3);
            let mut v = k[1].vote(9, &commit(1));
            v.signature[0] ^= 1;
            let votes = vec![k[0].vote(9, b""), v, k[2].vote(9, b"")];
            assert_eq!(
                verify_injected(&tx(9, votes), CHAIN, 10, &set),
                Err(InjectError::BadSignature(hex::encode_upper(k[1].address())))
            );
        }

        #[test]
        fn signature_for_another_chain_is_refused() {
            let (k, set) = keys(1);
            let votes = vec![k[0].vote(9, &commit(1))];
            assert_eq!(
                verify_injected(&tx(9, votes), "other-chain", 10, &set),
                Err(InjectError::BadSignature(hex::encode_upper(k[0].address())))
            );
        }

        #[test]
        fn votes_of_another_height_are_refused() {
            let (k, set) = keys(1);
            let votes = vec![k[0].vote(8, &commit(1))];
            assert_eq!(
                verify_injected(&tx(8, votes), CHAIN, 10, &set),
                Err(InjectError::WrongHeight {
                    got: 8,
                    expected: 9
                })
            );
        }

        #[test]
        fn duplicate_validator_is_refused() {
            let (k, set) = keys(2);
            let votes = vec![
                k[0].vote(9, &commit(1)),
                k[1].vote(9, b""),
                k[0].vote(9, b""),
            ];
            assert_eq!(
                verify_injected(&tx(9, votes), CHAIN, 10, &set),
                Err(InjectError::DuplicateValidator(hex::encode_upper(
                    k[0].address()
                )))
            );
        }

        #[test]
        fn two_thirds_of_the_power_is_not_enough() {
            let (k, set) = keys(3);
            let votes = vec![k[0].vote(9, &commit(1)), k[1].vote(9, b"")];
            assert_eq!(
                verify_injected(&tx(9, votes), CHAIN, 10, &set),
                Err(InjectError::InsufficientPower {
                    signed: 20,
                    total: 30
                })
            );
        }

        #[test]
        fn malformed_extension_is_refused_even_when_signed() {
            let (k, set) = keys(1);
            let bad = pb::VoteExtension {
                votes: vec![pb::JobVote {
                    job_id: 1,
                    step: Some(pb::job_vote::Step::Commit(vec![1; 31])),
                    evaluation_id: 0,
                }],
            }
            .encode_to_vec();
            let votes = vec![k[0].vote(9, &bad)];
            assert!(matches!(
                verify_injected(&tx(9, votes), CHAIN, 10, &set),
                Err(InjectError::BadExtension { .. })
            ));
        }

        #[test]
        fn votes_of_unknown_validators_are_skipped() {
            let (k, set) = keys(2);
            let stranger = Key::new(10);
            let mut forged = stranger.vote(9, &commit(3));
            forged.signature = vec![0; 64];
            let votes = vec![forged, k[0].vote(9, b""), k[1].vote(9, &commit(1))];
            let cast = verify_injected(&tx(9, votes), CHAIN, 10, &set).unwrap();
            assert_eq!(
                cast.iter().map(|c| c.validator).collect::<Vec<_>>(),
                vec![k[1].address()],
                "only the known validator's votes are cast"
            );
        }

        #[test]
        fn unknown_validators_do_not_count_for_power() {
            let (k, set) = keys(3);
            let stranger = Key::new(100);
            let votes = vec![stranger.vote(9, &commit(3)), k[0].vote(9, &commit(1))];
            assert_eq!(
                verify_injected(&tx(9, votes), CHAIN, 10, &set),
                Err(InjectError::InsufficientPower {
                    signed: 10,
                    total: 30
                })
            );
        }

        #[test]
        fn bytes_without_marker_or_protobuf_are_refused() {
            let (_, set) = keys(1);
            assert_eq!(
                verify_injected(b"\x0a\x02hi", CHAIN, 10, &set),
                Err(InjectError::NoMarker)
            );
            let mut bad = INJECTED_MARKER.to_vec();
            bad.push(0xff);
            assert!(matches!(
                verify_injected(&bad, CHAIN, 10, &set),
                Err(InjectError::Undecodable(_))
            ));
        }

        #[test]
        fn a_validator_address_of_the_wrong_length_is_refused() {
            let (k, set) = keys(1);
            let mut v = k[0].vote(9, &commit(1));
            v.validator.pop();
            assert_eq!(
                verify_injected(&tx(9, vec![v]), CHAIN, 10, &set),
                Err(InjectError::BadAddress { index: 0, len: 19 })
            );
        }

        #[test]
        fn injected_tx_carries_the_commits_signed_votes() {
            use tendermint::abci::types::{ExtendedVoteInfo, Validator};
            let (k, set) = keys(3);
            let info = |key: &Key, flag: BlockIdFlag, ext: &[u8]| ExtendedVoteInfo {
                validator: Validator {
                    address: key.address(),
                    power: 10u32.into(),
                },
                sig_info: BlockSignatureInfo::Flag(flag),
                vote_extension: ext.to_vec().into(),
                extension_signature: (flag == BlockIdFlag::Commit)
                    .then(|| key.sign(9, 2, ext).try_into().unwrap()),
            };
            let mut last = ExtendedCommitInfo {
                round: 2u16.into(),
                votes: vec![
                    info(&k[0], BlockIdFlag::Commit, b""),
                    info(&k[1], BlockIdFlag::Absent, b""),
                    info(&k[2], BlockIdFlag::Commit, b""),
                ],
            };
            assert_eq!(
                injected_votes_tx(10, &last),
                None,
                "nothing injected when every extension is empty"
            );
            last.votes[1] = info(&k[1], BlockIdFlag::Commit, &commit(5));
            let tx = injected_votes_tx(10, &last).unwrap();
            let injected = pb::InjectedVotes::decode(&tx[INJECTED_MARKER.len()..]).unwrap();
            assert_eq!((injected.height, injected.round), (9, 2));
            assert_eq!(injected.votes.len(), 3);
            let cast = verify_injected(&tx, CHAIN, 10, &set).unwrap();
            assert_eq!(cast.len(), 1);
            assert_eq!(cast[0].validator, k[1].address());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(job_id: u64) -> VerdictFile {
        VerdictFile {
            job_id,
            result_digest: [1; 32],
            matches: true,
            segments_digest: [2; 32],
            salt: [3; 32],
        }
    }

    #[test]
    fn verdict_files_round_trip_and_malformed_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("verdicts");
        verdict(7).write_atomically(&inbox).unwrap();
        verdict(3).write_atomically(&inbox).unwrap();
        std::fs::write(inbox.join("job-9.json"), b"{\"job_id\":9").unwrap();
        std::fs::write(
            inbox.join("job-8.json"),
            serde_json::to_vec(&verdict(4)).unwrap(),
        )
        .unwrap();
        std::fs::write(inbox.join("notes.txt"), b"hello").unwrap();
        let read = VerdictFile::read_all(&inbox).unwrap();
        assert_eq!(read, vec![verdict(3), verdict(7)]);
    }

    #[test]
    fn verdict_file_json_uses_hex_digests() {
        let json = serde_json::to_value(verdict(1)).unwrap();
        assert_eq!(json["result_digest"], hex::encode([1u8; 32]));
        let short = r#"{"job_id":1,"result_digest":"00","matches":true,"segments_digest":"00","salt":"00"}"#;
        assert!(serde_json::from_str::<VerdictFile>(short).is_err());
    }

    fn evaluation_verdict(evaluation_id: u64) -> EvaluationVerdictFile {
        EvaluationVerdictFile {
            evaluation_id,
            subject_digest: [4; 32],
            matches: true,
            score_json: r#"{"higher_is_better":true,"metric":"accuracy","rows":3,"value":1.0}"#
                .into(),
            salt: [5; 32],
        }
    }

    #[test]
    fn evaluation_verdicts_share_the_inbox_under_their_own_names() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path();
        let path = evaluation_verdict(7).write_atomically(inbox).unwrap();
        assert_eq!(path.file_name().unwrap(), "eval-7.json");
        evaluation_verdict(2).write_atomically(inbox).unwrap();
        verdict(7).write_atomically(inbox).unwrap();
        std::fs::write(inbox.join("eval-9.json"), b"{").unwrap();
        std::fs::write(
            inbox.join("eval-8.json"),
            serde_json::to_vec(&evaluation_verdict(3)).unwrap(),
        )
        .unwrap();
        assert_eq!(
            EvaluationVerdictFile::read_all(inbox).unwrap(),
            vec![evaluation_verdict(2), evaluation_verdict(7)]
        );
        assert_eq!(VerdictFile::read_all(inbox).unwrap(), vec![verdict(7)]);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(json["subject_digest"], hex::encode([4u8; 32]));
        assert_eq!(json["evaluation_id"], 7);
        assert!(json["score_json"].as_str().unwrap().contains("accuracy"));
    }

    #[test]
    fn an_evaluation_verdict_extends_a_commit_for_its_attestor() {
        use crate::models::EvaluationWrite as _;
        let mut state = crate::state::MemoryState::default();
        let mut d = crate::state::StateDelta::new(&state);
        d.put_evaluation(&pb::Evaluation {
            id: 1,
            status: pb::EvaluationStatus::Attesting as i32,
            subject_digest: vec![4; 32],
            attestation: Some(pb::ResultAttestation {
                commit_until: 100,
                reveal_until: 130,
                attestors: vec![pb::Attestor {
                    validator: vec![1; 20],
                    power: 10,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        state.apply(d.into_changes());
        let dir = tempfile::tempdir().unwrap();
        evaluation_verdict(1).write_atomically(dir.path()).unwrap();
        let attester = Attester {
            address: [1; 20],
            verdicts: dir.path().to_owned(),
        };
        let ext = vote_extension(&state, &attester).unwrap();
        let votes = pb::VoteExtension::decode(ext.as_slice()).unwrap().votes;
        assert_eq!(votes.len(), 1);
        assert_eq!((votes[0].job_id, votes[0].evaluation_id), (0, 1));
        assert!(matches!(
            votes[0].step,
            Some(pb::job_vote::Step::Commit(ref c)) if c.len() == 32
        ));
        let other = Attester {
            address: [2; 20],
            verdicts: dir.path().to_owned(),
        };
        assert!(
            vote_extension(&state, &other).unwrap().is_empty(),
            "a validator outside the attestors says nothing"
        );
    }

    #[test]
    fn missing_inbox_holds_no_verdicts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            VerdictFile::read_all(&dir.path().join("none")).unwrap(),
            vec![]
        );
    }

    #[test]
    fn key_file_address_is_checked_against_the_key() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let key = [5u8; 32];
        let address = training::attest::validator_address(&key);
        let write = |address: &str| {
            let path = dir.path().join("key.json");
            let json = serde_json::json!({
                "address": address,
                "pub_key": {
                    "type": "tendermint/PubKeyEd25519",
                    "value": base64::engine::general_purpose::STANDARD.encode(key),
                },
            });
            std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
            path
        };
        assert_eq!(
            key_file_address(&write(&hex::encode_upper(address))).unwrap(),
            address
        );
        assert!(key_file_address(&write(&hex::encode_upper([0u8; 20]))).is_err());
    }

    #[test]
    fn no_verdicts_extend_nothing() {
        let state = crate::state::MemoryState::default();
        let dir = tempfile::tempdir().unwrap();
        let attester = Attester {
            address: [1; 20],
            verdicts: dir.path().to_owned(),
        };
        assert!(vote_extension(&state, &attester).unwrap().is_empty());
        verdict(1).write_atomically(dir.path()).unwrap();
        evaluation_verdict(1).write_atomically(dir.path()).unwrap();
        assert!(
            vote_extension(&state, &attester).unwrap().is_empty(),
            "verdicts on a job and an evaluation the state does not know extend nothing"
        );
    }
}
