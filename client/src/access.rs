//! One way to reach the chain: [`ChainAccess`] reads a record at a height (with or without its
//! proof), fetches the signed header and validator sets the light client checks, tells the chain
//! id and the latest height, and broadcasts a signed tx until it is in a block. A CometBFT RPC
//! client ([`crate::NodeClient`]), an org gateway ([`crate::gateway::GatewayClient`]) and the
//! gateway's own chain handle implement it, and everything above (typed reads, verified reads,
//! the [`crate::Submitter`]) is written once against it.

use std::future::Future;
use std::time::Duration;

use neurodata_abci::query::{Query, Record, Typed};
use neurodata_proto::gateway::v1 as gw;
use tendermint::block::signed_header::SignedHeader;
use tendermint::validator::Set as ValidatorSet;

use crate::ClientError;

/// What a node answered to a read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The height of the state read.
    pub height: u64,
    /// The state key read (empty for a list).
    pub key: String,
    /// The stored value (empty: absent).
    pub value: Vec<u8>,
    /// With a proof asked for: the borsh JMT proof of `key` → `value`.
    pub proof: Vec<u8>,
}

/// A tx in a committed block.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    /// The block holding it.
    pub height: u64,
    /// Upper-case hex SHA-256 of the tx bytes.
    pub hash: String,
    /// The events it emitted (kinds and keys: `neurodata_abci::events`).
    pub events: Vec<gw::Event>,
}

/// A block as the light client checks it: its header with the commit that signed it, the
/// validators of that height and those of the next.
#[derive(Clone, Debug)]
pub struct LightBlock {
    /// Header and commit.
    pub signed_header: SignedHeader,
    /// The validators at this height (who signed the commit).
    pub validators: ValidatorSet,
    /// The validators at the next height.
    pub next_validators: ValidatorSet,
}

impl Committed {
    /// The chain's refusal a gateway broadcast answer carries, if it is one.
    pub fn refusal(r: &gw::BroadcastResponse) -> Option<ClientError> {
        (r.code != 0).then(|| ClientError::Rejected {
            hash: r.tx_hash.clone(),
            codespace: r.codespace.clone(),
            code: r.code,
            log: r.log.clone(),
        })
    }

    /// A gateway's COMMIT-mode answer: the committed tx, or the chain's refusal.
    pub fn from_response(r: gw::BroadcastResponse) -> Result<Self, ClientError> {
        if let Some(refused) = Self::refusal(&r) {
            return Err(refused);
        }
        Ok(Committed {
            height: r.height,
            hash: r.tx_hash,
            events: r.events,
        })
    }
}

type RawSignedHeader = tendermint_proto::types::SignedHeader;
type RawValidatorSet = tendermint_proto::types::ValidatorSet;

impl LightBlock {
    /// The gateway API's form.
    pub fn to_response(&self) -> gw::LightBlockResponse {
        use tendermint_proto::Protobuf;
        let set = |s: &ValidatorSet| Protobuf::<RawValidatorSet>::encode_vec(s.clone());
        gw::LightBlockResponse {
            signed_header: Protobuf::<RawSignedHeader>::encode_vec(self.signed_header.clone()),
            validators: set(&self.validators),
            next_validators: set(&self.next_validators),
        }
    }

    /// Reads the gateway API's form; what does not decode is a [`ClientError::Proof`] (the
    /// server sent something no verification can use).
    pub fn from_response(r: &gw::LightBlockResponse) -> Result<Self, ClientError> {
        use tendermint_proto::Protobuf;
        let bad = |what: &str, e: tendermint_proto::Error| {
            ClientError::Proof(format!("{what} does not decode: {e}"))
        };
        let set = |what: &str, bytes: &[u8]| {
            <ValidatorSet as Protobuf<RawValidatorSet>>::decode_vec(bytes).map_err(|e| bad(what, e))
        };
        Ok(LightBlock {
            signed_header: <SignedHeader as Protobuf<RawSignedHeader>>::decode_vec(
                &r.signed_header,
            )
            .map_err(|e| bad("signed header", e))?,
            validators: set("validator set", &r.validators)?,
            next_validators: set("next validator set", &r.next_validators)?,
        })
    }
}

/// A connection to the chain (see the module docs).
pub trait ChainAccess: Sync {
    /// The chain id.
    fn chain_id(&self) -> impl Future<Output = Result<String, ClientError>> + Send;

    /// The latest committed height.
    fn latest_height(&self) -> impl Future<Output = Result<u64, ClientError>> + Send;

    /// Reads `query` at `height` (0: latest), with its proof if `prove`. A refusal by the app is
    /// [`ClientError::Query`].
    fn read(
        &self,
        query: &Query,
        height: u64,
        prove: bool,
    ) -> impl Future<Output = Result<Answer, ClientError>> + Send;

    /// Block `height`'s signed header and validator sets; [`ClientError::NotYet`] if the block
    /// is not committed yet.
    fn light_block(
        &self,
        height: u64,
    ) -> impl Future<Output = Result<LightBlock, ClientError>> + Send;

    /// Broadcasts a signed tx and waits until it is in a block; a tx refused by CheckTx or by
    /// the block is [`ClientError::Rejected`].
    fn broadcast(&self, tx: Vec<u8>)
    -> impl Future<Output = Result<Committed, ClientError>> + Send;

    /// The record `query` reads at the latest height, without proof; None if absent.
    fn record<R: Record + Send>(
        &self,
        query: Typed<R>,
    ) -> impl Future<Output = Result<Option<R>, ClientError>> + Send {
        async move {
            let answer = self.read(&query.query, 0, false).await?;
            decode(&query.query, &answer.value)
        }
    }

    /// As [`ChainAccess::record`], with the height read.
    fn record_with_height<R: Record + Send>(
        &self,
        query: Typed<R>,
    ) -> impl Future<Output = Result<(Option<R>, u64), ClientError>> + Send {
        async move {
            let answer = self.read(&query.query, 0, false).await?;
            Ok((decode(&query.query, &answer.value)?, answer.height))
        }
    }
}

/// Decodes a record answer (empty: absent).
pub fn decode<R: Record>(query: &Query, value: &[u8]) -> Result<Option<R>, ClientError> {
    if value.is_empty() {
        return Ok(None);
    }
    R::decode_record(value)
        .map(Some)
        .map_err(|e| ClientError::Query {
            path: query.path().into(),
            log: format!("answer does not decode as {}: {e}", query.record_type()),
        })
}

/// Waits up to `wait` for block `height` to be committed and returns its light block: the one
/// place anything waits for a header.
pub async fn wait_light_block<C: ChainAccess>(
    chain: &C,
    height: u64,
    wait: Duration,
) -> Result<LightBlock, ClientError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match chain.light_block(height).await {
            Err(ClientError::NotYet(what)) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ClientError::Timeout(format!(
                        "{what} (waited {} ms)",
                        wait.as_millis()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}
