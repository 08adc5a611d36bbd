//! Every event the chain emits and every attribute key, in one table: the app builds events from
//! these, and the gateway and `ndctl` match on them, so a kind or key cannot drift between the
//! emitter and its consumers. A new event is one line in the `kinds!` table below (and its
//! attribute keys in [`attr`]).

macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// An event kind, `<domain>.<what happened>`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)*
        }

        impl EventKind {
            /// Every kind, in table order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The kind's name as CometBFT indexes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }

            /// The kind named `name`, if any.
            pub fn parse(name: &str) -> Option<EventKind> {
                match name {
                    $($name => Some(EventKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    /// A certificate was seen for the first time and registered.
    IdentityRegistered => "identity.registered",
    /// An identity was moved to its successor.
    IdentityMoved => "identity.moved",
    /// A certificate was revoked by its org's admin.
    CertificateRevoked => "certificate.revoked",
    /// A member renewed its certificate: what the old one held moved to the new one.
    CertificateRenewed => "certificate.renewed",
    /// A live member certificate or org CA entered the expiry notice window (once each).
    CertificateExpiring => "certificate.expiring",
    /// A tx paid its fee.
    FeePaid => "fee.paid",
    /// NRC moved between accounts.
    NrcTransfer => "nrc.transfer",
    /// NRC was minted into the treasury.
    NrcMinted => "nrc.minted",
    /// A proposal was opened.
    ProposalSubmitted => "proposal.submitted",
    /// An org voted.
    ProposalVoted => "proposal.voted",
    /// A proposal passed and its action ran.
    ProposalPassed => "proposal.passed",
    /// A proposal can no longer pass.
    ProposalRejected => "proposal.rejected",
    /// A passing proposal's action failed.
    ProposalFailed => "proposal.failed",
    /// An org was admitted.
    OrgAdmitted => "org.admitted",
    /// An org was removed.
    OrgRemoved => "org.removed",
    /// An org's root CA was replaced.
    OrgCaRotated => "org.ca_rotated",
    /// A validator was added, reweighted or removed.
    ValidatorUpdated => "validator.updated",
    /// CometBFT reported evidence of a validator's misbehaviour (double signing, a light-client
    /// attack); the app recorded it, and `outcome` says what it did about it.
    ValidatorMisbehaviour => "validator.misbehaviour",
    /// A validator with evidence against it was jailed: its power (`power`, the power it had)
    /// went to 0 and CometBFT removes it; only governance gives it power again.
    ValidatorJailed => "validator.jailed",
    /// Governance gave a jailed validator power again, which ends its jail.
    ValidatorUnjailed => "validator.unjailed",
    /// The chain parameters changed.
    ParamsChanged => "params.changed",
    /// Governance scheduled a software upgrade (`name`) at `height`: builds that do not know it
    /// stop there.
    UpgradeScheduled => "upgrade.scheduled",
    /// Governance cancelled the pending upgrade `name`.
    UpgradeCancelled => "upgrade.cancelled",
    /// This block ran upgrade `name`'s state migration before its own work.
    UpgradeApplied => "upgrade.applied",
    /// Governance paid out of the treasury or the reward pool.
    GovernanceSpent => "governance.spent",
    /// The reward pool paid a validator's operator.
    RewardPaid => "reward.paid",
    /// A dataset was listed.
    DatasetRegistered => "dataset.registered",
    /// A member asked for a preview of a listing.
    PreviewRequested => "dataset.preview_requested",
    /// A dataset's price changed.
    DatasetPriceChanged => "dataset.price_changed",
    /// A dataset was delisted.
    DatasetDelisted => "dataset.delisted",
    /// A validator org attested a dataset.
    DatasetAttested => "dataset.attested",
    /// A provider registered its dataset's hidden evaluation split.
    EvalSplitRegistered => "dataset.eval_split_registered",
    /// A model version was listed for sale.
    ModelPublished => "model.published",
    /// A model listing's price changed.
    ModelPriceChanged => "model.price_changed",
    /// A model listing was delisted.
    ModelDelisted => "model.delisted",
    /// A validator org attested a model listing's ciphertexts.
    ModelAttested => "model.attested",
    /// A purchase (or validation request) was opened.
    PurchaseOpened => "purchase.opened",
    /// The provider delivered the wrapped key.
    PurchaseKeyDelivered => "purchase.key_delivered",
    /// A wrong-key dispute was upheld.
    PurchaseDisputeUpheld => "purchase.dispute_upheld",
    /// A purchase closed (confirmed, released or refunded).
    PurchaseClosed => "purchase.closed",
    /// A worker offered (or withdrew) capacity.
    WorkerRegistered => "training.worker_registered",
    /// A training job was submitted; its bounty is in escrow.
    JobSubmitted => "training.submitted",
    /// A worker was drawn for a job.
    JobAssigned => "training.assigned",
    /// The assigned worker accepted and locked its stake.
    JobAccepted => "training.accepted",
    /// The worker posted its result.
    JobResult => "training.result",
    /// The sampling beacon was drawn; validators re-run their segments and commit.
    JobBeacon => "training.beacon",
    /// A validator's commit or reveal was recorded (or refused).
    JobAttested => "training.attested",
    /// Commits closed; validators reveal.
    JobRevealing => "training.revealing",
    /// Validators with more than 2/3 of the power agreed: the model version is on chain.
    JobFinalized => "training.finalized",
    /// Validators with more than 1/3 of the power found a mismatch: the stake was slashed.
    JobRejected => "training.rejected",
    /// A worker let a window pass (accept or result).
    JobMissed => "training.missed",
    /// The job ended without a model; the bounty went back.
    JobRefunded => "training.refunded",
    /// A member asked validators to score a model version on a dataset's hidden split.
    EvaluationRequested => "evaluation.requested",
    /// A validator's commit or reveal of a score was recorded (or refused).
    EvaluationAttested => "evaluation.attested",
    /// Validators with more than 2/3 of the power revealed the same score.
    EvaluationScored => "evaluation.scored",
    /// No score reached that agreement (or the agreed score does not parse).
    EvaluationFailed => "evaluation.failed",
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Attribute keys.
pub mod attr {
    /// A software upgrade's name.
    pub const UPGRADE: &str = "upgrade";
    /// A block height.
    pub const AT_HEIGHT: &str = "height";
    /// A validator's CometBFT address (hex, 20 bytes).
    pub const ADDRESS: &str = "address";
    /// An NRC amount.
    pub const AMOUNT: &str = "amount";
    /// A vote's direction.
    pub const APPROVE: &str = "approve";
    /// A worker's capacity.
    pub const CAPACITY: &str = "capacity";
    /// A training job id.
    pub const JOB: &str = "job";
    /// A model version id.
    pub const MODEL: &str = "model";
    /// Until when (Unix seconds) a rotated-out CA's certificates stay live.
    pub const GRACE_UNTIL: &str = "grace_until";
    /// A hex SHA-256.
    pub const HASH: &str = "hash";
    /// The height of a validator's offence, as CometBFT's evidence says.
    pub const EVIDENCE_HEIGHT: &str = "evidence_height";
    /// What the app did about a piece of evidence (`jailed`, `already_jailed`, `not_in_set`,
    /// `kept_last_power`, `kept_over_one_third`).
    pub const OUTCOME: &str = "outcome";
    /// How many training jobs moved.
    pub const JOBS: &str = "jobs";
    /// A certificate's notAfter, Unix seconds.
    pub const NOT_AFTER: &str = "not_after";
    /// Seconds from the block time until a certificate expires.
    pub const EXPIRES_IN: &str = "expires_in";
    /// A height something is due by.
    pub const DUE: &str = "due";
    /// A commit–reveal step.
    pub const STEP: &str = "step";
    /// A training worker (hex fingerprint).
    pub const WORKER: &str = "worker";
    /// A purchase's buyer (hex fingerprint).
    pub const BUYER: &str = "buyer";
    /// An org CA's fingerprint.
    pub const CA_FINGERPRINT: &str = "ca_fingerprint";
    /// A ciphertext CID.
    pub const CID: &str = "cid";
    /// A certificate's subject CN.
    pub const COMMON_NAME: &str = "common_name";
    /// Last height to confirm a purchase.
    pub const CONFIRM_BY: &str = "confirm_by";
    /// A dataset id.
    pub const DATASET: &str = "dataset";
    /// An evaluation id.
    pub const EVALUATION: &str = "evaluation";
    /// A certificate fingerprint.
    pub const FINGERPRINT: &str = "fingerprint";
    /// Where NRC or an identity moved from.
    pub const FROM: &str = "from";
    /// A proposal id.
    pub const ID: &str = "id";
    /// Last height to deliver a purchase's key.
    pub const KEY_DEADLINE: &str = "key_deadline";
    /// A purchase's kind, or a piece of evidence's (`duplicate_vote`, `light_client_attack`).
    pub const KIND: &str = "kind";
    /// How many listings moved.
    pub const LISTINGS: &str = "listings";
    /// A model listing id.
    pub const LISTING: &str = "listing";
    /// The `max_messages_per_tx` parameter.
    pub const MAX_MESSAGES_PER_TX: &str = "max_messages_per_tx";
    /// The `max_tx_bytes` parameter.
    pub const MAX_TX_BYTES: &str = "max_tx_bytes";
    /// The `min_fee` parameter.
    pub const MIN_FEE: &str = "min_fee";
    /// An org id.
    pub const ORG: &str = "org";
    /// A fee's payer.
    pub const PAYER: &str = "payer";
    /// Whether an attestation was positive.
    pub const POSITIVE: &str = "positive";
    /// Voting power.
    pub const POWER: &str = "power";
    /// A price.
    pub const PRICE: &str = "price";
    /// The `proposal_voting_blocks` parameter.
    pub const PROPOSAL_VOTING_BLOCKS: &str = "proposal_voting_blocks";
    /// The org that proposed.
    pub const PROPOSER_ORG: &str = "proposer_org";
    /// A dataset's provider (hex fingerprint).
    pub const PROVIDER: &str = "provider";
    /// A purchase's provider org.
    pub const PROVIDER_ORG: &str = "provider_org";
    /// An Ed25519 validator key (hex).
    pub const PUB_KEY: &str = "pub_key";
    /// A purchase id.
    pub const PURCHASE: &str = "purchase";
    /// How many purchases moved.
    pub const PURCHASES: &str = "purchases";
    /// Why (free text from the signer).
    pub const REASON: &str = "reason";
    /// A certificate's role.
    pub const ROLE: &str = "role";
    /// A leaderboard metric (`accuracy`, `rmse`).
    pub const METRIC: &str = "metric";
    /// A leaderboard score (decimal text, as validators revealed it).
    pub const SCORE: &str = "score";
    /// A module account paid from.
    pub const SOURCE: &str = "source";
    /// A dataset's hidden evaluation split (its dataset id).
    pub const SPLIT: &str = "split";
    /// A purchase's status.
    pub const STATUS: &str = "status";
    /// Total supply.
    pub const SUPPLY: &str = "supply";
    /// A proposal's title.
    pub const TITLE: &str = "title";
    /// Where NRC or an identity moved to.
    pub const TO: &str = "to";
    /// A validator key (hex).
    pub const VALIDATOR: &str = "validator";
    /// How many validators changed.
    pub const VALIDATORS: &str = "validators";
    /// Whether a dataset is verified.
    pub const VERIFIED: &str = "verified";
    /// Last height a proposal can be voted on.
    pub const VOTING_END_HEIGHT: &str = "voting_end_height";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_dotted_and_parse_back() {
        let mut seen = std::collections::BTreeSet::new();
        for k in EventKind::ALL {
            let name = k.as_str();
            assert!(seen.insert(name), "{name} twice");
            let (domain, what) = name.split_once('.').expect("dotted");
            assert!(!domain.is_empty() && !what.is_empty(), "{name}");
            assert_eq!(EventKind::parse(name), Some(*k));
        }
        assert_eq!(EventKind::parse("no.such"), None);
    }
}
