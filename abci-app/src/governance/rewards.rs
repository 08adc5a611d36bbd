//! Validator rewards, paid by rule: every `reward_epoch_blocks` blocks, at the end of the block,
//! the reward pool (tx fees and market fees) is split among the validators in proportion to their
//! voting power, each share paid to the validator's first registered operator. The share of a
//! validator with no operator, and what rounding leaves, stays in the pool for the next epoch (or
//! a governance `Spend`).

use crate::events::{EventKind, attr};

use super::GovernanceRead;
use crate::TxError;
use crate::address::Address;
use crate::amount::Amount;
use crate::ledger::{LedgerRead, LedgerWrite};
use crate::state::{Event, StateWrite};

/// `pool * power / total`, rounded down, without overflowing u128.
pub fn share(pool: Amount, power: u128, total: u128) -> Amount {
    if total == 0 {
        return Amount::ZERO;
    }
    Amount(pool.0 / total * power + pool.0 % total * power / total)
}

/// Pays the epoch's rewards if `height` ends an epoch.
pub fn pay_rewards<S: StateWrite>(state: &mut S, height: u64, epoch: u64) -> Result<(), TxError> {
    if epoch == 0 || !height.is_multiple_of(epoch) {
        return Ok(());
    }
    let pool = state.balance(&Address::reward_pool())?;
    if pool == Amount::ZERO {
        return Ok(());
    }
    let validators = state.active_validators()?;
    let total: u128 = validators
        .iter()
        .map(|v| u128::try_from(v.power).unwrap_or(0))
        .sum();
    for v in &validators {
        let Some(operator) = v.operators.first().and_then(|o| Address::from_slice(o)) else {
            continue;
        };
        let amount = share(pool, u128::try_from(v.power).unwrap_or(0), total);
        if amount == Amount::ZERO {
            continue;
        }
        state.move_funds(&Address::reward_pool(), &operator, amount)?;
        state.emit(
            Event::new(EventKind::RewardPaid)
                .attr(attr::VALIDATOR, hex::encode(&v.pub_key))
                .attr(attr::ORG, &v.org_id)
                .attr(attr::TO, operator)
                .attr(attr::AMOUNT, amount),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_down_never_overflow_and_never_exceed_the_pool() {
        assert_eq!(share(Amount(100), 1, 3), Amount(33));
        assert_eq!(share(Amount(100), 0, 3), Amount::ZERO);
        assert_eq!(share(Amount(100), 3, 0), Amount::ZERO);
        let max = i64::MAX as u128 / 8;
        assert!(share(Amount(u128::MAX), max, max) <= Amount(u128::MAX));
        assert_eq!(share(Amount(u128::MAX), max, max), Amount(u128::MAX));
        let parts = [1u128, 2, 3, 4];
        let sum: u128 = parts
            .iter()
            .map(|p| share(Amount(1_000_003), *p, 10).0)
            .sum();
        assert!(sum <= 1_000_003);
    }
}
