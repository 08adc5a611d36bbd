//! The error a rejected transaction returns: one per domain, each with a stable code that goes into
//! the ABCI result (and later maps to a gRPC status), and a message that says what to fix.

use crate::escrow::EscrowError;
use crate::governance::GovernanceError;
use crate::ledger::LedgerError;
use crate::market::MarketError;
use crate::membership::MembershipError;
use crate::models::{EvaluationError, ModelsError};
use crate::state::StateError;
use crate::training::TrainingError;
use crate::tx::EnvelopeError;
use std::ops::Range;

/// Each codespace's blocks of codes. Codes are stable, so a domain that fills its block gets
/// another one from 200 up instead of renumbering; blocks never overlap, so a code alone also
/// names its domain.
pub const CODE_BLOCKS: &[(&str, Range<u32>)] = &[
    ("tx", 1..20),
    ("membership", 20..40),
    ("ledger", 40..60),
    ("governance", 60..80),
    ("market", 80..99),
    ("state", 99..100),
    ("escrow", 100..120),
    ("training", 120..140),
    ("models", 140..160),
    ("evaluation", 160..180),
    ("governance", 200..220),
    ("membership", 220..240),
    // Not a `TxError`: an invalid injected-votes tx (`extension::InjectError`), whose result
    // only FinalizeBlock writes.
    ("extension", 240..260),
];

/// Why a transaction was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The envelope: bytes, signature, chain id, nonce, fee.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Certificates, orgs, roles, revocation.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// Balances and supply.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Proposals and votes.
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    /// Dataset listings and attestations.
    #[error(transparent)]
    Market(#[from] MarketError),
    /// Purchases and settlement.
    #[error(transparent)]
    Escrow(#[from] EscrowError),
    /// Training jobs, workers and results.
    #[error(transparent)]
    Training(#[from] TrainingError),
    /// Model listings and their sales.
    #[error(transparent)]
    Models(#[from] ModelsError),
    /// Evaluations of models on hidden splits.
    #[error(transparent)]
    Evaluation(#[from] EvaluationError),
    /// The store below the state machine failed (not the user's fault).
    #[error(transparent)]
    State(#[from] StateError),
}

/// Message conversions that cannot fail still go through `TryFrom`, with this error type.
impl From<std::convert::Infallible> for TxError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl TxError {
    /// Stable numeric code for the ABCI result (never 0, which means success), inside its
    /// codespace's [`CODE_BLOCKS`].
    pub fn code(&self) -> u32 {
        match self {
            TxError::Envelope(e) => e.code(),
            TxError::Membership(e) => e.code(),
            TxError::Ledger(e) => e.code(),
            TxError::Governance(e) => e.code(),
            TxError::Market(e) => e.code(),
            TxError::Escrow(e) => e.code(),
            TxError::Training(e) => e.code(),
            TxError::Models(e) => e.code(),
            TxError::Evaluation(e) => e.code(),
            TxError::State(_) => 99,
        }
    }

    /// The ABCI codespace: which domain rejected the tx.
    pub fn codespace(&self) -> &'static str {
        match self {
            TxError::Envelope(_) => "tx",
            TxError::Membership(_) => "membership",
            TxError::Ledger(_) => "ledger",
            TxError::Governance(_) => "governance",
            TxError::Market(_) => "market",
            TxError::Escrow(_) => "escrow",
            TxError::Training(_) => "training",
            TxError::Models(_) => "models",
            TxError::Evaluation(_) => "evaluation",
            TxError::State(_) => "state",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::Amount;
    use crate::escrow::EscrowError as Es;
    use crate::governance::GovernanceError as G;
    use crate::ledger::LedgerError as L;
    use crate::market::MarketError as Mk;
    use crate::membership::MembershipError as M;
    use crate::models::EvaluationError as Ev;
    use crate::models::ModelsError as Mo;
    use crate::training::TrainingError as Tr;
    use crate::tx::EnvelopeError as E;

    /// One value of each listed variant, as `TxError`s. The generated match names every listed
    /// variant and has no wildcard arm, so a variant added to the enum does not compile until it
    /// is listed here.
    macro_rules! every {
        ($ty:ident {
            $($variant:ident $(($($tuple:tt)*))? $({$($fields:tt)*})?),* $(,)?
        }) => {{
            fn listed(e: &$ty) {
                match e {
                    $($ty::$variant { .. } => {})*
                }
            }
            let values: Vec<$ty> =
                vec![$($ty::$variant $(($($tuple)*))? $({$($fields)*})?),*];
            values.iter().for_each(listed);
            values.into_iter().map(TxError::from).collect::<Vec<_>>()
        }};
    }

    fn every_error() -> Vec<TxError> {
        let s = || String::from("x");
        let mut all = every!(E {
            Oversize { size: 2, max: 1 },
            Malformed(s()),
            NonCanonicalBody,
            UnknownMessage { index: 0 },
            MessageCount { count: 0, max: 16 },
            WrongChainId { expected: s(), got: s() },
            BadSignature(s()),
            NonceReplay { expected: 2, got: 1 },
            NonceGap { expected: 1, got: 2 },
            FeeTooLow { fee: Amount(0), min: Amount(1) },
            NonCanonicalEnvelope,
            NonCanonicalSignature,
            HighS,
            InvalidField { field: "memo", reason: s() },
        });
        all.extend(every!(M {
            BadCertificate(s()),
            FingerprintMismatch { signer: s(), actual: s() },
            UnknownSigner(s()),
            UnknownCa { issuer: s() },
            NotSignedByCa { org: s() },
            OrgNotActive { org: s() },
            CaRotated { org: s() },
            NotYetValid { not_before: 2, block_time: 1 },
            Expired { not_after: 1, block_time: 2 },
            Revoked { fingerprint: s(), height: 1 },
            RoleNotAllowed { role: s(), message: "transfer", allowed: s() },
            ForeignCertificate { cert_org: s(), admin_org: s() },
            AlreadyRevoked(s()),
            UnknownCertificate(s()),
            AlreadyMoved { from: s(), successor: s() },
            KeyNotP256,
            RootNotCa,
            RootNotSelfSigned,
            RootSignatureInvalid,
            RoleCount { count: 0 },
            UnknownRole { ou: s() },
            CaCannotSign,
            Renewed { successor: s(), fingerprint: s() },
            RenewalMismatch { what: "role", current: s(), new: s() },
            RenewalNotLater { current_not_after: 2, new_not_after: 1 },
            AlreadyRegistered(s()),
            RenewalToSelf,
            RenewalFromRetiringCa { org: s() },
        }));
        all.extend(every!(L {
            InsufficientFunds { account: s(), have: Amount(0), need: Amount(1) },
            Overflow(s()),
            ZeroAmount,
        }));
        all.extend(every!(G {
            ProposalNotFound(1),
            ProposalClosed { id: 1, status: s() },
            VotingEnded { id: 1, end: 2 },
            DoubleVote { id: 1, org: s() },
            LastOrg(s()),
            LastValidator,
            OrgExists(s()),
            UnknownOrg(s()),
            CaSubjectInUse(s()),
            UnknownValidator(s()),
            NoAction,
            TotalPowerTooHigh { max: 1 },
            BadOrgId { org_id: s() },
            BadOrgName { len: 0 },
            BadValidatorKey { len: 31 },
            PowerOutOfRange { power: -1, max: 1 },
            TooManyOperators { count: 9, max: 8 },
            BadOperator { index: 0, len: 31 },
            OperatorIsModuleAccount { operator: s() },
            OperatorOfOtherOrg { operator: s(), member_of: s(), org: s() },
            BadValidatorName { len: 65 },
            BadAmount { field: "mint.amount", reason: s() },
            ZeroAmount { field: "mint.amount" },
            BadSpendSource { given: 0 },
            BadSpendRecipient { len: 31 },
            ParamOutOfRange { param: "max_tx_bytes", value: 10, min: 1024, max: 4096 },
            BadMinFee { reason: s() },
            SaleSharesAboveWhole { market_fee_bps: 200, model_royalty_bps: 9_900 },
            BadUpgradeName { name: s() },
            UpgradeHeightPassed { height: 1, current: 2 },
            UpgradeAlreadyApplied { name: s(), height: 1 },
            NoUpgradeToCancel { name: s(), pending: s() },
            UpgradeInfoTooLong { len: 1025 },
            JailedAfterProposal { pub_key: s(), jailed_height: 2, submitted_height: 1 },
        }));
        all.extend(every!(Mk {
            UnknownDataset(1),
            DuplicateCid { cid: s(), dataset: 1 },
            NoSchema,
            NotProvider { dataset: 1, provider_org: s() },
            Delisted(1),
            NoVotingPower(s()),
            NotOperator { fingerprint: s(), org: s() },
            AlreadyVerified(1),
            DuplicateKeyCommitment { dataset: 1 },
            ColumnCount { count: 0, max: 256 },
            BadColumnName { index: 0, name: s() },
            DuplicateColumn { name: s() },
            UnknownColumnType { name: s(), type_code: 0 },
            NoPreview(1),
            PreviewRequested { dataset: 1, height: 1 },
            OwnPreview { dataset: 1, org: s() },
            HiddenSplit(2),
            SplitExists { dataset: 1, split: 2 },
            SplitSchemaMismatch { dataset: 1, difference: s() },
        }));
        all.extend(every!(Es {
            UnknownPurchase(1),
            OwnDataset { dataset: 1, org: s() },
            AlreadyPurchased { dataset: 1, purchase: 1 },
            PriceAboveMax { price: Amount(2), max: Amount(1) },
            NotBuyer(1),
            NotProviderOrg { purchase: 1, provider_org: s() },
            WrongStatus { purchase: 1, status: s(), action: "confirm" },
            DeliveryWindowClosed { purchase: 1, deadline: 1 },
            RefundTooEarly { purchase: 1, deadline: 1 },
            BadWrappedKey(s()),
            BadProof(s()),
            KeyMatches(1),
            ProviderOrgInactive { dataset: 1, org: s() },
            ValidationQuota { org: s(), open: 4, max: 4 },
            NotBuyerOrAdmin(1),
            RecipientNotBuyer { purchase: 1, buyer: s() },
        }));
        all.extend(every!(Tr {
            UnknownJob(1),
            NotPurchased(1),
            BadSpec(s()),
            SpecSchemaMismatch { dataset: 1, reason: s() },
            WrongStatus { job: 1, status: "queued", needed: "assigned" },
            NotAssigned { job: 1, assigned: s() },
            NotSubmitter(1),
            DeadlineTooSoon { deadline: 1, now: 1, min: 60 },
            WindowClosed { job: 1, what: "accept", at: 1 },
            BadResult(s()),
            Capacity(17),
            NotAttestor { job: 1, fingerprint: s() },
        }));
        all.extend(every!(Mo {
            UnknownModelVersion(1),
            NotModelOwner { model_version: 1, owner_org: s() },
            CardMismatch { field: s(), claimed: s(), chain: s() },
            AlreadyListed { model_version: 1, listing: 2 },
            DuplicateCid { cid: s(), holder: s() },
            DuplicateKeyCommitment { holder: s() },
            UnknownListing(1),
            NotListingOwner { listing: 1, owner_org: s() },
            Delisted(1),
            OwnModel { listing: 1, org: s() },
            PriceAboveMax { price: Amount(2), max: Amount(1) },
            AlreadyBought { listing: 1, purchase: 2 },
            OwnerOrgInactive { listing: 1, org: s() },
            PlaintextArtifact { cid: s(), model_version: 1 },
            AlreadyVerified(1),
            NoKeyDelivered { listing: 1 },
        }));
        all.extend(every!(Ev {
            UnknownModelVersion(1),
            NotTrainedOn { model_version: 1, dataset: 2, trained_on: s() },
            NoSplit(1),
            TrainedOnSplit { model_version: 1, dataset: 1, split: 2 },
            AlreadyEvaluated { model_version: 1, dataset: 1, evaluation: 3, status: "scored" },
            NoAttestors,
            NotOwnerOrg { model_version: 1, owner_org: s() },
        }));
        // Every store failure is one code: it is the node's fault, never the tx's.
        all.push(TxError::State(StateError::Storage(s())));
        all
    }

    #[test]
    fn every_error_code_is_unique_nonzero_and_inside_its_codespaces_block() {
        for (i, (space, a)) in CODE_BLOCKS.iter().enumerate() {
            assert!(a.start > 0 && a.start < a.end, "{space} {a:?}");
            for (other, b) in &CODE_BLOCKS[i + 1..] {
                assert!(
                    a.end <= b.start || b.end <= a.start,
                    "{space} {a:?} overlaps {other} {b:?}"
                );
            }
        }
        let all = every_error();
        let mut seen = std::collections::BTreeMap::new();
        for e in &all {
            let (space, code) = (e.codespace(), e.code());
            assert_ne!(code, 0, "{e:?}");
            assert!(!e.to_string().trim().is_empty(), "{e:?} has no message");
            assert!(
                CODE_BLOCKS
                    .iter()
                    .any(|(s, r)| *s == space && r.contains(&code)),
                "{e:?}: code {code} is outside the {space} blocks"
            );
            if let Some(prev) = seen.insert((space, code), e) {
                panic!("{space} {code} is both {prev:?} and {e:?}");
            }
        }
        for (space, _) in CODE_BLOCKS.iter().filter(|(s, _)| *s != "extension") {
            assert!(
                all.iter().any(|e| e.codespace() == *space),
                "no error in codespace {space}"
            );
        }
    }
}
