//! Verified reads that do not trust the node or gateway answering them.
//!
//! A [`LightClient`] starts from a trust root the user chose: the chain's genesis (its validator
//! set), or a block hash at a height the user got out of band. To accept a header it checks, with
//! the tendermint light-client verifier, that the header's commit carries the signatures of more
//! than 2/3 of that height's voting power and that validators it already trusts vouch for that
//! set: directly for the next block, or with at least 1/3 of their power for a later one,
//! bisecting when the set has changed too much in between (governance adding, removing and
//! re-weighting validators). A proof is then checked against the app hash of a header accepted
//! this way, so a forged header, a header of another chain, or a proof from another height is
//! refused whoever serves it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use neurodata_abci::query::{Proof, Query, Record, Typed};
use tendermint::block::Header;
use tendermint::validator::Set as ValidatorSet;
use tendermint::{Hash, Time};
use tendermint_light_client_verifier::options::Options;
use tendermint_light_client_verifier::types::{
    TrustThreshold, TrustedBlockState, UntrustedBlockState,
};
use tendermint_light_client_verifier::{ProdVerifier, Verdict, Verifier as _};

use crate::access::{ChainAccess, decode, wait_light_block};
use crate::{ClientError, verify_proof};

/// How long a verified read waits for the block after the one it read (whose header carries
/// the app hash of that state).
pub const NEXT_BLOCK_WAIT: Duration = Duration::from_secs(30);

/// How many verified blocks a client remembers as starting points.
const REMEMBERED: usize = 64;

/// Most light blocks one verification fetches: bisection needs about log2 of the distance per
/// validator-set hand-over, so this bounds what a server that withholds trust can make us fetch.
const MAX_FETCHES: usize = 256;

/// A state value read with a proof checked against a light-client-verified header.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The state key.
    pub key: String,
    /// The value (None: proven absent).
    pub value: Option<Vec<u8>>,
    /// Height of the state.
    pub height: u64,
    /// The app hash (from verified header `height + 1`) the proof was checked against.
    pub app_hash: [u8; 32],
}

/// A block the client trusts: what verifying the next one needs. Saved by [`LightClient::anchor`]
/// so a later process starts from it instead of the root, whose trusting period runs out.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    /// The chain.
    pub chain_id: tendermint::chain::Id,
    /// The block's height.
    pub height: u64,
    /// Its header time.
    pub time: Time,
    /// The validators of the block after it.
    pub next_validators: ValidatorSet,
}

#[derive(Clone, Debug)]
struct Trusted {
    time: Time,
    next_validators: ValidatorSet,
}

/// A validator set from a list whose total power the caller does not control: the tendermint
/// constructor panics above its limit.
pub(crate) fn validator_set(
    validators: Vec<tendermint::validator::Info>,
) -> Result<ValidatorSet, ClientError> {
    let total = validators
        .iter()
        .try_fold(0u64, |sum, v| sum.checked_add(v.power()))
        .filter(|t| *t <= ValidatorSet::MAX_TOTAL_VOTING_POWER);
    if total.is_none() {
        return Err(ClientError::Proof(
            "a validator set's total voting power is above CometBFT's limit".into(),
        ));
    }
    Ok(ValidatorSet::without_proposer(validators))
}

/// The genesis fields a trust root needs.
#[derive(serde::Deserialize)]
struct Genesis {
    genesis_time: Time,
    chain_id: tendermint::chain::Id,
    #[serde(default)]
    validators: Vec<tendermint::validator::Info>,
}

/// A light client for one chain (see the module docs). Cheap to share; verified blocks are
/// remembered so the next read starts from the closest one.
pub struct LightClient {
    chain_id: tendermint::chain::Id,
    options: Options,
    verifier: ProdVerifier,
    /// Verified blocks by height; the lowest is the trust root.
    trusted: Mutex<BTreeMap<u64, Trusted>>,
    /// How old the state a read of the latest height returns may be.
    max_age: Duration,
}

/// The defaults: trust a validator set for two weeks after its block, tolerate 10 s of clock
/// drift, and need more than 2/3 of a trusted set's power to vouch for a later set. CometBFT's
/// light client takes 1/3 and cross-checks witnesses; a member reading through one gateway has
/// no witness, and 1/3 would let orgs holding just over a third of the power (too few to fork the
/// chain) sign a state of their own making that the client accepts.
pub fn default_options() -> Options {
    Options {
        trust_threshold: TrustThreshold::TWO_THIRDS,
        trusting_period: Duration::from_secs(14 * 24 * 3600),
        clock_drift: Duration::from_secs(10),
    }
}

/// How old the latest state may be: a server answering a read of the latest height with an old
/// (validly signed) state is refused after this.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

impl LightClient {
    /// Trusts the validator set of a genesis file (`genesis.json` as CometBFT reads it).
    pub fn from_genesis(genesis_json: &[u8], options: Options) -> Result<Self, ClientError> {
        let g: Genesis = serde_json::from_slice(genesis_json)
            .map_err(|e| ClientError::Decode(format!("genesis: {e}")))?;
        if g.validators.is_empty() {
            return Err(ClientError::Decode(
                "genesis has no validators to trust (the app sets them at InitChain): anchor at \
                 a trusted height instead"
                    .into(),
            ));
        }
        // Block 1's time is the genesis time, and the verifier wants a later time than the
        // trusted one: the root sits a nanosecond before.
        let time = (g.genesis_time - Duration::from_nanos(1))
            .map_err(|e| ClientError::Decode(format!("genesis time: {e}")))?;
        let root = Trusted {
            time,
            next_validators: validator_set(g.validators)?,
        };
        Ok(Self::with_root(g.chain_id, options, 0, root))
    }

    /// Trusts block `height` whose header hash is `hash` (learnt out of band, e.g. from another
    /// member's node): its header and next validators are fetched from `chain` and checked
    /// against the hash.
    pub async fn from_trusted_block<C: ChainAccess>(
        chain: &C,
        height: u64,
        hash: Hash,
        options: Options,
    ) -> Result<Self, ClientError> {
        let lb = chain.light_block(height).await?;
        let header = &lb.signed_header.header;
        if header.hash() != hash {
            return Err(ClientError::Proof(format!(
                "block {height} has hash {}, the trusted hash is {hash}",
                header.hash()
            )));
        }
        if lb.next_validators.hash() != header.next_validators_hash {
            return Err(ClientError::Proof(format!(
                "the next validators served for block {height} are not the ones its header names"
            )));
        }
        let root = Trusted {
            time: header.time,
            next_validators: lb.next_validators,
        };
        Ok(Self::with_root(
            header.chain_id.clone(),
            options,
            height,
            root,
        ))
    }

    /// Starts from a block verified by an earlier client of the same root ([`LightClient::anchor`]).
    pub fn from_anchor(anchor: Anchor, options: Options) -> Self {
        let root = Trusted {
            time: anchor.time,
            next_validators: anchor.next_validators,
        };
        Self::with_root(anchor.chain_id, options, anchor.height, root)
    }

    fn with_root(
        chain_id: tendermint::chain::Id,
        options: Options,
        height: u64,
        root: Trusted,
    ) -> Self {
        LightClient {
            chain_id,
            options,
            verifier: ProdVerifier::default(),
            trusted: Mutex::new(BTreeMap::from([(height, root)])),
            max_age: DEFAULT_MAX_AGE,
        }
    }

    /// How old the state of a read of the latest height may be (default [`DEFAULT_MAX_AGE`]).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The highest verified block, to save and start a later client from.
    pub fn anchor(&self) -> Option<Anchor> {
        let map = self.remembered();
        map.iter().next_back().map(|(height, t)| Anchor {
            chain_id: self.chain_id.clone(),
            height: *height,
            time: t.time,
            next_validators: t.next_validators.clone(),
        })
    }

    /// The chain this client trusts.
    pub fn chain_id(&self) -> &str {
        self.chain_id.as_str()
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Trusted>> {
        // A map of verified blocks stays valid whatever panicked while holding it.
        self.trusted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The highest verified height.
    pub fn latest_trusted(&self) -> u64 {
        self.remembered().keys().next_back().copied().unwrap_or(0)
    }

    fn closest_below(&self, height: u64) -> Result<(u64, Trusted), ClientError> {
        let map = self.remembered();
        match map.range(..height).next_back() {
            Some((h, t)) => Ok((*h, t.clone())),
            None => Err(ClientError::Proof(format!(
                "height {height} is at or below the trust root {}: verify from an earlier root",
                map.keys().next().copied().unwrap_or(0)
            ))),
        }
    }

    fn remember(&self, height: u64, trusted: Trusted) {
        let mut map = self.remembered();
        map.insert(height, trusted);
        // Keep the root and the most recent blocks.
        while map.len() > REMEMBERED {
            let Some(second) = map.keys().nth(1).copied() else {
                break;
            };
            map.remove(&second);
        }
    }

    /// The header of block `height`, accepted only if its commit verifies from the trust root
    /// (waiting up to `wait` for the block to be committed).
    pub async fn verify<C: ChainAccess>(
        &self,
        chain: &C,
        height: u64,
        wait: Duration,
    ) -> Result<Header, ClientError> {
        let (mut from, mut trusted) = self.closest_below(height)?;
        let mut target = height;
        for _ in 0..MAX_FETCHES {
            let lb = wait_light_block(chain, target, wait).await?;
            let header = &lb.signed_header.header;
            if header.height.value() != target {
                return Err(ClientError::Proof(format!(
                    "asked for block {target}, got a header for {}",
                    header.height
                )));
            }
            let untrusted = UntrustedBlockState {
                signed_header: &lb.signed_header,
                validators: &lb.validators,
                next_validators: Some(&lb.next_validators),
            };
            let trusted_state = TrustedBlockState {
                chain_id: &self.chain_id,
                header_time: trusted.time,
                height: tendermint::block::Height::try_from(from)
                    .map_err(|e| ClientError::Decode(e.to_string()))?,
                next_validators: &trusted.next_validators,
                next_validators_hash: trusted.next_validators.hash(),
            };
            // A commit its own validators did not sign is a lie, not a reason to bisect.
            match self.verifier.verify_commit(&untrusted) {
                Verdict::Success => {}
                Verdict::NotEnoughTrust(tally) => {
                    return Err(ClientError::Proof(format!(
                        "block {target}: its validators did not sign its commit with more than \
                         2/3 of their power ({tally})"
                    )));
                }
                Verdict::Invalid(detail) => {
                    return Err(ClientError::Proof(format!(
                        "block {target} fails light-client verification: {detail}"
                    )));
                }
            }
            let verdict = self.verifier.verify_update_header(
                untrusted,
                trusted_state,
                &self.options,
                Time::now(),
            );
            match verdict {
                Verdict::Success => {
                    let verified = Trusted {
                        time: header.time,
                        next_validators: lb.next_validators.clone(),
                    };
                    self.remember(target, verified.clone());
                    if target == height {
                        return Ok(lb.signed_header.header);
                    }
                    (from, trusted, target) = (target, verified, height);
                }
                Verdict::NotEnoughTrust(tally) => {
                    // Too much of the set changed between `from` and `target`: verify a block
                    // in between first.
                    let mid = from + (target - from) / 2;
                    if mid == from {
                        return Err(ClientError::Proof(format!(
                            "block {target}: the validators trusted at {from} do not vouch for \
                             its commit ({tally})"
                        )));
                    }
                    target = mid;
                }
                Verdict::Invalid(detail) => {
                    return Err(ClientError::Proof(format!(
                        "block {target} fails light-client verification: {detail}"
                    )));
                }
            }
        }
        Err(ClientError::Proof(format!(
            "block {height}: no chain of trust from block {from} within {MAX_FETCHES} fetched \
             blocks"
        )))
    }

    /// Reads `query` at `height` (0: latest) with its proof, and checks the proof against the
    /// app hash of the verified header of the next block.
    pub async fn read<C: ChainAccess>(
        &self,
        chain: &C,
        query: &Query,
        height: u64,
    ) -> Result<Verified, ClientError> {
        let Proof::Key(expected_key) = query.proof() else {
            return Err(ClientError::Query {
                path: query.path().into(),
                log: "a list carries no proof; read it unverified".into(),
            });
        };
        let answer = chain.read(query, height, true).await?;
        if answer.key != expected_key {
            return Err(ClientError::Proof(format!(
                "answered for key {}, asked {expected_key}",
                answer.key
            )));
        }
        if height != 0 && answer.height != height {
            return Err(ClientError::Proof(format!(
                "answered at height {}, asked {height}",
                answer.height
            )));
        }
        let next = answer
            .height
            .checked_add(1)
            .filter(|h| i64::try_from(*h).is_ok())
            .ok_or_else(|| {
                ClientError::Proof(format!("height {} is out of range", answer.height))
            })?;
        if height == 0 && next < self.latest_trusted() {
            return Err(ClientError::Proof(format!(
                "answered with the state at {} as the latest, but block {} is verified already",
                answer.height,
                self.latest_trusted()
            )));
        }
        let header = self.verify(chain, next, NEXT_BLOCK_WAIT).await?;
        if height == 0 {
            // A validly signed old state is still not the latest one.
            let age = Time::now()
                .duration_since(header.time)
                .unwrap_or(Duration::ZERO);
            if age > self.max_age {
                return Err(ClientError::Proof(format!(
                    "the latest state offered is from block {} of {} s ago (allowed: {} s): the \
                     server is stale or the chain is halted",
                    answer.height,
                    age.as_secs(),
                    self.max_age.as_secs()
                )));
            }
        }
        let app_hash: [u8; 32] = header
            .app_hash
            .as_bytes()
            .try_into()
            .map_err(|_| ClientError::Proof("app hash is not 32 bytes".into()))?;
        let value = (!answer.value.is_empty()).then_some(answer.value);
        verify_proof(&expected_key, value.as_deref(), &answer.proof, app_hash)?;
        Ok(Verified {
            key: expected_key,
            value,
            height: answer.height,
            app_hash,
        })
    }

    /// The record `query` reads at the latest height, verified; None if proven absent.
    pub async fn record<C: ChainAccess, R: Record>(
        &self,
        chain: &C,
        query: Typed<R>,
    ) -> Result<Option<R>, ClientError> {
        let v = self.read(chain, &query.query, 0).await?;
        decode(&query.query, v.value.as_deref().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use neurodata_abci::query::{Proof, Query};
    use tendermint_testgen::{Generator as _, Header as TestHeader, Validator};

    use super::*;
    use crate::access::{Answer, Committed, LightBlock};

    /// Blocks served as a node would, from a generated chain; reads answer with the state at
    /// `answer_at` (and no usable proof).
    struct Blocks(BTreeMap<u64, LightBlock>, u64);

    impl ChainAccess for Blocks {
        async fn chain_id(&self) -> Result<String, ClientError> {
            Ok("test-chain".into())
        }
        async fn latest_height(&self) -> Result<u64, ClientError> {
            Ok(self.0.keys().next_back().copied().unwrap_or(0))
        }
        async fn read(&self, q: &Query, _: u64, _: bool) -> Result<Answer, ClientError> {
            let Proof::Key(key) = q.proof() else {
                return Err(ClientError::Transport("no lists here".into()));
            };
            Ok(Answer {
                height: self.1,
                key,
                value: vec![1],
                proof: vec![],
            })
        }
        async fn light_block(&self, height: u64) -> Result<LightBlock, ClientError> {
            self.0
                .get(&height)
                .cloned()
                .ok_or_else(|| ClientError::NotYet(format!("block {height}")))
        }
        async fn broadcast(&self, _: Vec<u8>) -> Result<Committed, ClientError> {
            Err(ClientError::Transport("read only".into()))
        }
    }

    fn set(names: &[&str]) -> Vec<Validator> {
        names
            .iter()
            .map(|n| Validator::new(n).voting_power(10))
            .collect()
    }

    fn start() -> Time {
        (Time::now() - Duration::from_secs(3600)).unwrap()
    }

    /// Block `height` signed by `vals`, naming `next` as the next block's validators.
    fn block(height: u64, vals: &[Validator], next: &[Validator]) -> LightBlock {
        let time = (start() + Duration::from_secs(height)).unwrap();
        let header = TestHeader::new(vals)
            .height(height)
            .chain_id("test-chain")
            .next_validators(next)
            .time(time);
        let tb = tendermint_testgen::LightBlock::new_default_with_header(header)
            .next_validators(next)
            .generate()
            .unwrap();
        LightBlock {
            signed_header: tb.signed_header,
            validators: tb.validators,
            next_validators: tb.next_validators,
        }
    }

    /// 1..=7 signed by a, b, c, d; 8..=20 by e, f, g, h: nobody the genesis trusted signs the
    /// later blocks, so reaching them takes verifying the hand-over in between.
    fn chain() -> Blocks {
        let (old, new) = (set(&["a", "b", "c", "d"]), set(&["e", "f", "g", "h"]));
        Blocks(
            (1..=20)
                .map(|h| match h {
                    1..=6 => (h, block(h, &old, &old)),
                    7 => (h, block(h, &old, &new)),
                    _ => (h, block(h, &new, &new)),
                })
                .collect(),
            19,
        )
    }

    fn trusting_genesis() -> LightClient {
        let root = Trusted {
            time: start(),
            next_validators: ValidatorSet::without_proposer(
                set(&["a", "b", "c", "d"])
                    .iter()
                    .map(|v| v.generate().unwrap())
                    .collect(),
            ),
        };
        LightClient::with_root("test-chain".parse().unwrap(), default_options(), 0, root)
    }

    #[tokio::test]
    async fn a_header_signed_by_a_wholly_new_set_is_reached_by_bisection() {
        let chain = chain();
        let light = trusting_genesis();
        let header = light.verify(&chain, 20, Duration::ZERO).await.unwrap();
        assert_eq!(header.height.value(), 20);
        // The hand-over block was verified on the way and is remembered.
        assert!(light.remembered().contains_key(&7));
        // An earlier height is verified from the closest block below it.
        assert_eq!(
            light
                .verify(&chain, 9, Duration::ZERO)
                .await
                .unwrap()
                .height
                .value(),
            9
        );
    }

    #[tokio::test]
    async fn a_set_nobody_trusted_handed_over_to_is_refused() {
        let mut chain = chain();
        // A liar's blocks from 8 on: signed by a set of its own, without a hand-over from the
        // trusted set (block 7 still names e, f, g, h).
        let fake = set(&["x", "y", "z", "w"]);
        for h in 8..=20 {
            chain.0.insert(h, block(h, &fake, &fake));
        }
        let light = trusting_genesis();
        let err = light.verify(&chain, 20, Duration::ZERO).await.unwrap_err();
        assert!(matches!(err, ClientError::Proof(_)), "{err}");
    }

    #[tokio::test]
    async fn a_commit_its_own_validators_did_not_sign_is_refused_without_bisecting() {
        let mut chain = chain();
        let mut stripped = chain.0[&20].clone();
        stripped.signed_header.commit.signatures.truncate(1);
        chain.0.insert(20, stripped);
        let light = trusting_genesis();
        let err = light.verify(&chain, 20, Duration::ZERO).await.unwrap_err();
        assert!(err.to_string().contains("insufficient signers"), "{err}");
        assert_eq!(light.latest_trusted(), 0, "nothing was fetched in between");
    }

    #[tokio::test]
    async fn a_header_with_a_rewritten_field_is_refused() {
        let mut chain = chain();
        let mut forged = chain.0[&20].clone();
        forged.signed_header.header.app_hash =
            tendermint::AppHash::try_from(vec![7u8; 32]).unwrap();
        chain.0.insert(20, forged);
        let err = trusting_genesis()
            .verify(&chain, 20, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Proof(_)), "{err}");
    }

    #[tokio::test]
    async fn an_old_state_offered_as_the_latest_is_refused() {
        let mut chain = chain();
        let light = trusting_genesis();
        let account = neurodata_abci::query::account(crate::Address([3; 32])).query;
        // Every block here is an hour old: validly signed, but not the latest state.
        let err = light.read(&chain, &account, 0).await.unwrap_err();
        assert!(err.to_string().contains("stale"), "{err}");
        // Once block 20 is verified, an answer from before it is not the latest either.
        chain.1 = 4;
        let err = light.read(&chain, &account, 0).await.unwrap_err();
        assert!(err.to_string().contains("verified already"), "{err}");
        // A read at an explicit height does not ask for the latest: only the proof is wrong.
        let err = light.read(&chain, &account, 4).await.unwrap_err();
        assert!(err.to_string().contains("proof"), "{err}");
    }

    #[tokio::test]
    async fn a_client_started_from_a_saved_anchor_goes_on_from_it() {
        let chain = chain();
        let first = trusting_genesis();
        first.verify(&chain, 12, Duration::ZERO).await.unwrap();
        let anchor = first.anchor().unwrap();
        assert_eq!(anchor.height, 12);
        let json = serde_json::to_vec(&anchor).unwrap();
        let next =
            LightClient::from_anchor(serde_json::from_slice(&json).unwrap(), default_options());
        next.verify(&chain, 20, Duration::ZERO).await.unwrap();
        // Nothing at or below the anchor can be verified from it.
        assert!(next.verify(&chain, 12, Duration::ZERO).await.is_err());
    }

    #[tokio::test]
    async fn a_block_not_committed_yet_times_out_and_height_zero_is_refused() {
        let chain = chain();
        let light = trusting_genesis();
        let err = light
            .verify(&chain, 21, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout(_)), "{err}");
        assert!(light.verify(&chain, 0, Duration::ZERO).await.is_err());
    }
}
