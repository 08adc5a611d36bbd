//! Chain parameters: defaults, bounds and conversion from the wire type.

use neurodata_proto::chain::v1 as pb;

use super::GovernanceError;
use crate::amount::Amount;

/// Checked chain parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Smallest fee.
    pub min_fee: Amount,
    /// Blocks a proposal is open.
    pub proposal_voting_blocks: u64,
    /// Largest tx in bytes.
    pub max_tx_bytes: u64,
    /// Most messages per tx.
    pub max_messages_per_tx: u32,
    /// Blocks a provider has to deliver a purchased key.
    pub key_delivery_blocks: u64,
    /// Blocks a buyer has to confirm or dispute (or claim a refund) before a purchase closes.
    pub confirm_blocks: u64,
    /// Reward-pool share of each sale, basis points.
    pub market_fee_bps: u32,
    /// Most validation requests one org may have open at once.
    pub max_open_validations_per_org: u32,
    /// Blocks between reward-pool payouts to validators (0: never).
    pub reward_epoch_blocks: u64,
    /// Share of each model sale paid as royalties to the providers of the datasets the model was
    /// trained on, basis points (see `crate::models::royalty`); with `market_fee_bps` at most
    /// 10000, so a sale never owes more than its price.
    pub model_royalty_bps: u32,
    /// Seconds before a member certificate or an org CA expires that the chain announces it
    /// (`certificate.expiring`, once per certificate; see `crate::membership::expiry`).
    pub cert_expiry_notice_secs: u64,
}

/// Default of [`Params::cert_expiry_notice_secs`]: 30 days, time for an org admin to issue
/// renewed certificates and for members to send their renewals.
pub const DEFAULT_CERT_EXPIRY_NOTICE_SECS: u64 = 30 * 86_400;

impl Default for Params {
    fn default() -> Self {
        Params {
            min_fee: Amount(0),
            proposal_voting_blocks: 1_000,
            max_tx_bytes: 64 * 1024,
            max_messages_per_tx: 16,
            key_delivery_blocks: 100,
            confirm_blocks: 600,
            market_fee_bps: 200,
            max_open_validations_per_org: 4,
            reward_epoch_blocks: 100,
            model_royalty_bps: 1_000,
            cert_expiry_notice_secs: DEFAULT_CERT_EXPIRY_NOTICE_SECS,
        }
    }
}

impl TryFrom<pb::Params> for Params {
    type Error = GovernanceError;
    fn try_from(p: pb::Params) -> Result<Self, GovernanceError> {
        let min_fee = p.min_fee.parse().map_err(|e| GovernanceError::BadMinFee {
            reason: format!("{e}"),
        })?;
        // CometBFT's own block limit is far above max_tx_bytes; 4 MiB keeps any single tx cheap
        // to check.
        // The expiry notice: at least a day (less is no notice), at most a year and a day (the
        // end-of-block scan reads one index bucket per day the window grows by).
        let bounds: [(&'static str, u64, u64, u64); 10] = [
            (
                "proposal_voting_blocks",
                p.proposal_voting_blocks,
                1,
                1_000_000,
            ),
            ("max_tx_bytes", p.max_tx_bytes, 1024, 4 * 1024 * 1024),
            ("max_messages_per_tx", p.max_messages_per_tx.into(), 1, 256),
            ("key_delivery_blocks", p.key_delivery_blocks, 1, 1_000_000),
            ("confirm_blocks", p.confirm_blocks, 1, 1_000_000),
            ("market_fee_bps", p.market_fee_bps.into(), 0, 10_000),
            (
                "max_open_validations_per_org",
                p.max_open_validations_per_org.into(),
                0,
                1_000,
            ),
            ("reward_epoch_blocks", p.reward_epoch_blocks, 0, 1_000_000),
            ("model_royalty_bps", p.model_royalty_bps.into(), 0, 10_000),
            (
                "cert_expiry_notice_secs",
                p.cert_expiry_notice_secs,
                86_400,
                366 * 86_400,
            ),
        ];
        for (param, value, min, max) in bounds {
            if !(min..=max).contains(&value) {
                return Err(GovernanceError::ParamOutOfRange {
                    param,
                    value,
                    min,
                    max,
                });
            }
        }
        // The fee and the royalties both come out of a model sale's price: together they may
        // take all of it, never more (the owner's share would be negative).
        if u64::from(p.market_fee_bps) + u64::from(p.model_royalty_bps) > 10_000 {
            return Err(GovernanceError::SaleSharesAboveWhole {
                market_fee_bps: p.market_fee_bps,
                model_royalty_bps: p.model_royalty_bps,
            });
        }
        Ok(Params {
            min_fee,
            proposal_voting_blocks: p.proposal_voting_blocks,
            max_tx_bytes: p.max_tx_bytes,
            max_messages_per_tx: p.max_messages_per_tx,
            key_delivery_blocks: p.key_delivery_blocks,
            confirm_blocks: p.confirm_blocks,
            market_fee_bps: p.market_fee_bps,
            max_open_validations_per_org: p.max_open_validations_per_org,
            reward_epoch_blocks: p.reward_epoch_blocks,
            model_royalty_bps: p.model_royalty_bps,
            cert_expiry_notice_secs: p.cert_expiry_notice_secs,
        })
    }
}

impl From<&Params> for pb::Params {
    fn from(p: &Params) -> Self {
        pb::Params {
            min_fee: p.min_fee.to_string(),
            proposal_voting_blocks: p.proposal_voting_blocks,
            max_tx_bytes: p.max_tx_bytes,
            max_messages_per_tx: p.max_messages_per_tx,
            key_delivery_blocks: p.key_delivery_blocks,
            confirm_blocks: p.confirm_blocks,
            market_fee_bps: p.market_fee_bps,
            max_open_validations_per_org: p.max_open_validations_per_org,
            reward_epoch_blocks: p.reward_epoch_blocks,
            model_royalty_bps: p.model_royalty_bps,
            cert_expiry_notice_secs: p.cert_expiry_notice_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_out_of_range_values_are_refused() {
        let d = Params::default();
        assert_eq!(Params::try_from(pb::Params::from(&d)).unwrap(), d);
        let mut p = pb::Params::from(&d);
        p.max_tx_bytes = 10;
        assert_eq!(
            Params::try_from(p),
            Err(GovernanceError::ParamOutOfRange {
                param: "max_tx_bytes",
                value: 10,
                min: 1024,
                max: 4 * 1024 * 1024,
            })
        );
        let mut p = pb::Params::from(&d);
        p.market_fee_bps = 10_001;
        assert!(matches!(
            Params::try_from(p),
            Err(GovernanceError::ParamOutOfRange {
                param: "market_fee_bps",
                ..
            })
        ));
        let mut p = pb::Params::from(&d);
        p.min_fee = "-1".into();
        assert!(matches!(
            Params::try_from(p),
            Err(GovernanceError::BadMinFee { .. })
        ));
    }

    #[test]
    fn a_royalty_above_100_percent_is_refused() {
        let mut p = pb::Params::from(&Params::default());
        p.market_fee_bps = 0;
        p.model_royalty_bps = 10_001;
        assert_eq!(
            Params::try_from(p),
            Err(GovernanceError::ParamOutOfRange {
                param: "model_royalty_bps",
                value: 10_001,
                min: 0,
                max: 10_000,
            })
        );
    }

    #[test]
    fn a_market_fee_and_royalty_above_100_percent_together_are_refused() {
        let with = |market_fee_bps, model_royalty_bps| {
            Params::try_from(pb::Params {
                market_fee_bps,
                model_royalty_bps,
                ..pb::Params::from(&Params::default())
            })
        };
        assert_eq!(
            with(200, 9_801),
            Err(GovernanceError::SaleSharesAboveWhole {
                market_fee_bps: 200,
                model_royalty_bps: 9_801,
            })
        );
        assert!(
            with(200, 9_800).is_ok(),
            "exactly the whole price is allowed"
        );
        assert!(with(0, 10_000).is_ok());
    }
}
