//! The query table: every record a client can read, with its ABCI path, the bytes of its query
//! data, the record type it answers with, and how it is proved. The app answers from it, the
//! gateway serves it and the clients build and check their reads with it, so a new record type
//! is one row of [`query_table!`] below.
//!
//! A single-record query reads one state key and is provable: the answer carries a JMT proof of
//! that key against the app hash, and a client recomputes the key from its own query, so a proof
//! for another key is refused. A list is computed from the latest state and carries no proof.

use std::marker::PhantomData;

use neurodata_proto::chain::v1 as pb;
use prost::Message as _;

use crate::address::Address;
use crate::state::{StateError, StateRead};
use crate::{app, escrow, governance, ledger, market, membership, models, training};

/// The proof type name in `ProofOp.type`: a borsh `jmt::proof::SparseMerkleProof<Sha256>` for
/// `sha256(key)` against the app hash.
pub const PROOF_TYPE: &str = "jmt.sha256";

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No such path.
    #[error("unknown query path {path:?}; known: {}", Query::PATHS.join(" "))]
    UnknownPath {
        /// The path asked for.
        path: String,
    },
    /// The data is not what the path expects.
    #[error("query {path}: {reason}")]
    BadData {
        /// The path.
        path: &'static str,
        /// What the data should be.
        reason: &'static str,
    },
}

/// How a query is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    /// One state key, provable against the app hash.
    Key(String),
    /// A list computed from the latest state; no proof.
    None,
}

/// The query data of one argument type: how it is written and read back.
pub trait QueryArg: Sized {
    /// The bytes sent as ABCI query data.
    fn to_data(&self) -> Vec<u8>;
    /// Reads the bytes back; `path` names the query in the error.
    fn from_data(path: &'static str, data: &[u8]) -> Result<Self, QueryError>;
}

impl QueryArg for Address {
    fn to_data(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    fn from_data(path: &'static str, data: &[u8]) -> Result<Self, QueryError> {
        Address::from_slice(data).ok_or(QueryError::BadData {
            path,
            reason: "data must be a 32-byte address or fingerprint",
        })
    }
}

impl QueryArg for u64 {
    fn to_data(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn from_data(path: &'static str, data: &[u8]) -> Result<Self, QueryError> {
        <[u8; 8]>::try_from(data)
            .map(u64::from_be_bytes)
            .map_err(|_| QueryError::BadData {
                path,
                reason: "data must be the id as 8 big-endian bytes",
            })
    }
}

impl QueryArg for String {
    fn to_data(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn from_data(path: &'static str, data: &[u8]) -> Result<Self, QueryError> {
        String::from_utf8(data.to_vec()).map_err(|_| QueryError::BadData {
            path,
            reason: "data must be UTF-8",
        })
    }
}

/// A provider org's listing of a ciphertext: `ORG/CID` in UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgCid {
    /// The provider org.
    pub org: String,
    /// The ciphertext CID.
    pub cid: String,
}

impl QueryArg for OrgCid {
    fn to_data(&self) -> Vec<u8> {
        format!("{}/{}", self.org, self.cid).into_bytes()
    }
    fn from_data(path: &'static str, data: &[u8]) -> Result<Self, QueryError> {
        let (org, cid) = std::str::from_utf8(data)
            .ok()
            .and_then(|d| d.split_once('/'))
            .ok_or(QueryError::BadData {
                path,
                reason: "data must be ORG/CID in UTF-8",
            })?;
        Ok(OrgCid {
            org: org.into(),
            cid: cid.into(),
        })
    }
}

/// A buyer's live purchase of a dataset: the 32-byte buyer then the 8-byte dataset id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuyerDataset {
    /// The buyer.
    pub buyer: Address,
    /// The dataset.
    pub dataset: u64,
}

impl QueryArg for BuyerDataset {
    fn to_data(&self) -> Vec<u8> {
        [&self.buyer.0[..], &self.dataset.to_be_bytes()].concat()
    }
    fn from_data(path: &'static str, data: &[u8]) -> Result<Self, QueryError> {
        let bad = QueryError::BadData {
            path,
            reason: "data must be the 32-byte buyer then the 8-byte dataset id",
        };
        if data.len() != 40 {
            return Err(bad);
        }
        Ok(BuyerDataset {
            buyer: Address::from_slice(&data[..32]).ok_or(bad.clone())?,
            dataset: u64::from_data(path, &data[32..])?,
        })
    }
}

macro_rules! filter_arg {
    ($($t:ty),*) => {$(
        impl QueryArg for $t {
            fn to_data(&self) -> Vec<u8> {
                self.encode_to_vec()
            }
            fn from_data(path: &'static str, data: &[u8]) -> Result<Self, QueryError> {
                <$t>::decode(data).map_err(|_| QueryError::BadData {
                    path,
                    reason: "data must be the protobuf filter message (neurodata.chain.v1)",
                })
            }
        }
    )*};
}
filter_arg!(
    pb::DatasetFilter,
    pb::PurchaseFilter,
    pb::JobFilter,
    pb::ModelListingFilter
);

/// A record type a query answers with: how its stored bytes decode (a present record only; an
/// absent record is an empty answer).
pub trait Record: Sized {
    /// Decodes the stored bytes; the error says what was wrong.
    fn decode_record(bytes: &[u8]) -> Result<Self, String>;
}

macro_rules! proto_record {
    ($($t:ty),*) => {$(
        impl Record for $t {
            fn decode_record(bytes: &[u8]) -> Result<Self, String> {
                <$t>::decode(bytes).map_err(|e| e.to_string())
            }
        }
    )*};
}
proto_record!(
    pb::Account,
    pb::Identity,
    pb::Revocation,
    pb::Org,
    pb::Proposal,
    pb::Params,
    pb::Supply,
    pb::BlockInfo,
    pb::Dataset,
    pb::DatasetStats,
    pb::Purchase,
    pb::PreviewRequest,
    pb::OrgList,
    pb::ValidatorList,
    pb::ProposalList,
    pb::MisbehaviourList,
    pb::JailedValidator,
    pb::JailedValidatorList,
    pb::DatasetList,
    pb::PurchaseList,
    pb::Job,
    pb::Worker,
    pb::ModelVersion,
    pb::AttestorStats,
    pb::JobList,
    pb::WorkerList,
    pb::ModelVersionList,
    pb::ModelListing,
    pb::ModelStats,
    pb::ModelListingList,
    pb::Evaluation,
    pb::EvaluationList,
    pb::Leaderboard,
    pb::ExpiringCertificateList
);

/// An index entry: the id of the record it points at, stored as 8 big-endian bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Id(pub u64);

impl Record for Id {
    fn decode_record(bytes: &[u8]) -> Result<Self, String> {
        <[u8; 8]>::try_from(bytes)
            .map(|b| Id(u64::from_be_bytes(b)))
            .map_err(|_| format!("an id is 8 bytes, got {}", bytes.len()))
    }
}

/// A state value as stored, undecoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raw(pub Vec<u8>);

impl Record for Raw {
    fn decode_record(bytes: &[u8]) -> Result<Self, String> {
        Ok(Raw(bytes.to_vec()))
    }
}

/// A query whose answer decodes as `R`: what [`query_table!`]'s constructors return, so a client
/// cannot read a record as the wrong type.
#[derive(Clone, Debug, PartialEq)]
pub struct Typed<R> {
    /// The query.
    pub query: Query,
    record: PhantomData<fn() -> R>,
}

impl<R> Typed<R> {
    fn new(query: Query) -> Self {
        Typed {
            query,
            record: PhantomData,
        }
    }
}

/// The table. Each row: the typed constructor's name, the variant and its argument, the
/// ABCI path, the record type the answer decodes as, and how it is proved (`key(...)`: that
/// state key; `list`: no proof, latest height).
macro_rules! query_table {
    ($(
        $(#[$doc:meta])*
        $ctor:ident: $variant:ident $(($arg:ident: $ty:ty))? = $path:literal => $record:ty,
            $how:ident $(($key:expr))?;
    )*) => {
        /// A read of chain state: one variant per record or list.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Query {
            $( $(#[$doc])* $variant $(($ty))?, )*
        }

        impl Query {
            /// Every path, in table order.
            pub const PATHS: &[&str] = &[$($path),*];

            /// The ABCI query path.
            pub fn path(&self) -> &'static str {
                match self {
                    $( Query::$variant $(($arg))? => { $(let _ = $arg;)? $path } )*
                }
            }

            /// The ABCI query data.
            pub fn data(&self) -> Vec<u8> {
                match self {
                    $( Query::$variant $(($arg))? => query_table!(@data $($arg)?), )*
                }
            }

            /// The query an ABCI path and data ask for.
            pub fn parse(path: &str, data: &[u8]) -> Result<Query, QueryError> {
                match path {
                    $( $path => {
                        $( let $arg = <$ty as QueryArg>::from_data($path, data)?; )?
                        query_table!(@no_data $path, data $(, $arg)?);
                        Ok(Query::$variant $(($arg))?)
                    } )*
                    other => Err(QueryError::UnknownPath { path: other.to_owned() }),
                }
            }

            /// How the answer is proved: the state key it reads, or none for a list.
            pub fn proof(&self) -> Proof {
                match self {
                    $( Query::$variant $(($arg))? => {
                        $(let _ = $arg;)?
                        query_table!(@how $how $(, $key)?)
                    } )*
                }
            }

            /// The protobuf type the answer's value decodes as (absent record: empty value).
            pub fn record_type(&self) -> &'static str {
                match self {
                    $( Query::$variant $(($arg))? => { $(let _ = $arg;)? stringify!($record) } )*
                }
            }
        }

        $(
            $(#[$doc])*
            pub fn $ctor($($arg: $ty)?) -> Typed<$record> {
                Typed::new(Query::$variant $(($arg))?)
            }
        )*
    };
    (@data) => { Vec::new() };
    (@data $arg:ident) => { QueryArg::to_data($arg) };
    (@how key, $key:expr) => { Proof::Key($key) };
    (@how list) => { Proof::None };
    (@no_data $path:literal, $data:ident, $arg:ident) => {};
    (@no_data $path:literal, $data:ident) => {
        if !$data.is_empty() {
            return Err(QueryError::BadData { path: $path, reason: "this query takes no data" });
        }
    };
}

query_table! {
    /// An account: balance and next nonce (absent: zero and 0).
    account: Account(a: Address) = "/account" => pb::Account,
        key(ledger::state_key::account(a));
    /// A registered identity by certificate fingerprint.
    identity: Identity(a: Address) = "/identity" => pb::Identity,
        key(membership::state_key::identity(&a.0));
    /// A revocation by certificate fingerprint.
    revocation: Revocation(a: Address) = "/revocation" => pb::Revocation,
        key(membership::state_key::revocation(&a.0));
    /// A member org by id.
    org: Org(id: String) = "/org" => pb::Org,
        key(membership::state_key::org(id));
    /// A governance proposal by id.
    proposal: Proposal(id: u64) = "/proposal" => pb::Proposal,
        key(governance::state_key::proposal(*id));
    /// The chain parameters.
    params: Params = "/params" => pb::Params,
        key(governance::state_key::params().into());
    /// The pending software upgrade plan.
    upgrade_plan: UpgradePlan = "/upgrade_plan" => pb::UpgradePlan,
        key(governance::state_key::upgrade_plan().into());
    /// The total NRC supply.
    supply: Supply = "/supply" => pb::Supply,
        key(ledger::state_key::supply().into());
    /// The last executed block's height and time.
    block: Block = "/block" => pb::BlockInfo,
        key(app::state_key::block().into());
    /// Any state key, as raw bytes (operators' debugging).
    store: Store(key: String) = "/store" => Raw,
        key(key.clone());
    /// A dataset listing by id.
    dataset: Dataset(id: u64) = "/dataset" => pb::Dataset,
        key(market::state_key::dataset(*id));
    /// A dataset's usage statistics.
    dataset_stats: DatasetStats(id: u64) = "/dataset_stats" => pb::DatasetStats,
        key(market::state_key::stats(*id));
    /// The dataset id a provider org lists a ciphertext CID under.
    dataset_by_cid: DatasetByCid(c: OrgCid) = "/dataset_by_cid" => Id,
        key(market::state_key::by_cid(&c.org, &c.cid));
    /// A purchase by id.
    purchase: Purchase(id: u64) = "/purchase" => pb::Purchase,
        key(escrow::state_key::purchase(*id));
    /// The live purchase id of a buyer for a dataset.
    live_purchase: LivePurchase(b: BuyerDataset) = "/live_purchase" => Id,
        key(escrow::state_key::by_buyer(&b.buyer, b.dataset));
    /// A member's preview request for a dataset.
    preview_request: PreviewRequest(b: BuyerDataset) = "/preview_request" => pb::PreviewRequest,
        key(market::state_key::preview(b.dataset, &b.buyer));
    /// Every member org.
    orgs: Orgs = "/orgs" => pb::OrgList, list;
    /// Every validator.
    validators: Validators = "/validators" => pb::ValidatorList, list;
    /// Every proposal.
    proposals: Proposals = "/proposals" => pb::ProposalList, list;
    /// Every misbehaviour record: CometBFT's evidence against validators and what the app did.
    misbehaviours: Misbehaviours = "/misbehaviours" => pb::MisbehaviourList, list;
    /// Every jailed validator.
    jailed_validators: JailedValidators = "/jailed_validators" => pb::JailedValidatorList, list;
    /// A validator's jail record by Ed25519 key (hex; absent: not jailed).
    jailed_validator: JailedValidator(hex: String) = "/jailed_validator" => pb::JailedValidator,
        key(governance::state_key::jailed_hex(hex));
    /// Listings passing a filter.
    datasets: Datasets(f: pb::DatasetFilter) = "/datasets" => pb::DatasetList, list;
    /// Purchases passing a filter.
    purchases: Purchases(f: pb::PurchaseFilter) = "/purchases" => pb::PurchaseList, list;
    /// A training job by id, with every step of its life.
    job: Job(id: u64) = "/job" => pb::Job,
        key(training::state_key::job(*id));
    /// A registered worker by fingerprint.
    worker: Worker(a: Address) = "/worker" => pb::Worker,
        key(training::state_key::worker(a));
    /// A model version by id.
    model_version: ModelVersion(id: u64) = "/model_version" => pb::ModelVersion,
        key(training::state_key::model(*id));
    /// A validator's attestation record by CometBFT address (hex).
    attestor: Attestor(hex: String) = "/attestor" => pb::AttestorStats,
        key(training::state_key::attestor_hex(hex));
    /// Jobs passing a filter.
    jobs: Jobs(f: pb::JobFilter) = "/jobs" => pb::JobList, list;
    /// Every worker.
    workers: Workers = "/workers" => pb::WorkerList, list;
    /// Every model version.
    model_versions: ModelVersions = "/model_versions" => pb::ModelVersionList, list;
    /// A model listing by id, with the model card the chain wrote.
    model_listing: ModelListing(id: u64) = "/model_listing" => pb::ModelListing,
        key(models::state_key::listing(*id));
    /// A model listing's usage statistics (sales, revenue, royalties paid).
    model_stats: ModelStats(id: u64) = "/model_stats" => pb::ModelStats,
        key(models::state_key::stats(*id));
    /// The model listing id an owner org lists a ciphertext CID (model file or ONNX) under.
    model_listing_by_cid: ModelListingByCid(c: OrgCid) = "/model_listing_by_cid" => Id,
        key(models::state_key::by_cid(&c.org, &c.cid));
    /// The live purchase id of a buyer for a model listing (`dataset`: the listing id).
    live_model_purchase: LiveModelPurchase(b: BuyerDataset) = "/live_model_purchase" => Id,
        key(escrow::state_key::by_buyer_model(&b.buyer, b.dataset));
    /// Model listings passing a filter.
    model_listings: ModelListings(f: pb::ModelListingFilter) = "/model_listings"
        => pb::ModelListingList, list;
    /// An evaluation of a model version on a dataset's hidden split, with every commit and
    /// reveal.
    evaluation: Evaluation(id: u64) = "/evaluation" => pb::Evaluation,
        key(models::evaluation_state_key::evaluation(*id));
    /// Every evaluation.
    evaluations: Evaluations = "/evaluations" => pb::EvaluationList, list;
    /// A dataset's leaderboard (data: the public dataset's id): its models scored on its hidden
    /// split, best first within each target column.
    leaderboard: Leaderboard(id: u64) = "/leaderboard" => pb::Leaderboard, list;
    /// The live member certificates and org CAs expiring within the given number of seconds
    /// (data: 8 big-endian bytes, at most twenty years) of the last block's time, soonest first.
    expiring_certificates: ExpiringCertificates(within_secs: u64) = "/expiring_certificates"
        => pb::ExpiringCertificateList, list;
}

/// Answers a list query from `state` (its latest height): the encoded list.
pub fn list<S: StateRead>(query: &Query, state: &S) -> Result<Option<Vec<u8>>, StateError> {
    Ok(Some(match query {
        Query::Orgs => pb::OrgList {
            orgs: state.prefix_proto(membership::state_key::ORGS)?,
        }
        .encode_to_vec(),
        Query::Validators => pb::ValidatorList {
            validators: governance::GovernanceRead::validators(state)?,
        }
        .encode_to_vec(),
        Query::Proposals => pb::ProposalList {
            proposals: governance::GovernanceRead::proposals(state)?,
        }
        .encode_to_vec(),
        Query::Misbehaviours => pb::MisbehaviourList {
            misbehaviours: governance::GovernanceRead::misbehaviours(state)?,
        }
        .encode_to_vec(),
        Query::JailedValidators => pb::JailedValidatorList {
            jailed: governance::GovernanceRead::jailed_validators(state)?,
        }
        .encode_to_vec(),
        Query::Datasets(f) => pb::DatasetList {
            datasets: market::MarketRead::datasets(state)?
                .into_iter()
                .filter(|d| market::matches_filter(d, f))
                .collect(),
        }
        .encode_to_vec(),
        Query::Purchases(f) => pb::PurchaseList {
            purchases: escrow::EscrowRead::purchases(state)?
                .into_iter()
                .filter(|p| escrow::matches_filter(p, f))
                .collect(),
        }
        .encode_to_vec(),
        Query::Jobs(f) => pb::JobList {
            jobs: training::TrainingRead::jobs(state)?
                .into_iter()
                .filter(|j| training::matches_filter(j, f))
                .collect(),
        }
        .encode_to_vec(),
        Query::Workers => pb::WorkerList {
            workers: training::TrainingRead::workers(state)?,
        }
        .encode_to_vec(),
        Query::ModelVersions => pb::ModelVersionList {
            models: training::TrainingRead::model_versions(state)?,
        }
        .encode_to_vec(),
        Query::ModelListings(f) => pb::ModelListingList {
            listings: models::ModelsRead::model_listings(state)?
                .into_iter()
                .filter(|l| models::matches_filter(l, f))
                .collect(),
        }
        .encode_to_vec(),
        Query::Evaluations => pb::EvaluationList {
            evaluations: models::EvaluationRead::evaluations(state)?,
        }
        .encode_to_vec(),
        Query::Leaderboard(id) => models::leaderboard(state, *id)?.encode_to_vec(),
        Query::ExpiringCertificates(within) => {
            membership::expiry::expiring(state, *within)?.encode_to_vec()
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_query() -> Vec<Query> {
        let a = Address([7; 32]);
        vec![
            account(a).query,
            identity(a).query,
            revocation(a).query,
            org("medlab".into()).query,
            proposal(7).query,
            params().query,
            supply().query,
            block().query,
            store("chain/id".into()).query,
            dataset(3).query,
            dataset_stats(3).query,
            dataset_by_cid(OrgCid {
                org: "medlab".into(),
                cid: "bafk".into(),
            })
            .query,
            purchase(9).query,
            live_purchase(BuyerDataset {
                buyer: a,
                dataset: 3,
            })
            .query,
            preview_request(BuyerDataset {
                buyer: a,
                dataset: 3,
            })
            .query,
            orgs().query,
            validators().query,
            proposals().query,
            misbehaviours().query,
            jailed_validators().query,
            jailed_validator("00ff".into()).query,
            datasets(pb::DatasetFilter {
                provider_org: "medlab".into(),
                ..Default::default()
            })
            .query,
            purchases(pb::PurchaseFilter::default()).query,
            job(4).query,
            worker(a).query,
            model_version(2).query,
            attestor("00ff".into()).query,
            jobs(pb::JobFilter {
                dataset_id: 3,
                ..Default::default()
            })
            .query,
            workers().query,
            model_versions().query,
            model_listing(2).query,
            model_stats(2).query,
            model_listing_by_cid(OrgCid {
                org: "healthtech".into(),
                cid: "bafk".into(),
            })
            .query,
            live_model_purchase(BuyerDataset {
                buyer: a,
                dataset: 2,
            })
            .query,
            model_listings(pb::ModelListingFilter {
                dataset_id: 3,
                ..Default::default()
            })
            .query,
            evaluation(5).query,
            evaluations().query,
            leaderboard(3).query,
            expiring_certificates(30 * 86_400).query,
            upgrade_plan().query,
        ]
    }

    #[test]
    fn every_query_round_trips_through_its_path_and_data() {
        let all = every_query();
        assert_eq!(all.len(), Query::PATHS.len(), "one test query per row");
        for q in all {
            assert_eq!(Query::parse(q.path(), &q.data()), Ok(q.clone()), "{q:?}");
        }
    }

    #[test]
    fn paths_map_to_domain_keys_and_bad_data_is_refused() {
        assert_eq!(
            Query::parse("/org", b"medlab").map(|q| q.proof()),
            Ok(Proof::Key("membership/org/medlab".into()))
        );
        assert_eq!(
            proposal(7).query.proof(),
            Proof::Key(governance::state_key::proposal(7))
        );
        assert_eq!(orgs().query.proof(), Proof::None);
        assert!(matches!(
            Query::parse("/account", b"short"),
            Err(QueryError::BadData {
                path: "/account",
                ..
            })
        ));
        assert!(matches!(
            Query::parse("/params", b"junk"),
            Err(QueryError::BadData { .. })
        ));
        let unknown = Query::parse("/nope", b"");
        assert!(matches!(unknown, Err(QueryError::UnknownPath { .. })));
        assert!(
            unknown
                .err()
                .is_some_and(|e| e.to_string().contains("/purchases")),
            "the refusal lists the known paths"
        );
    }
}
