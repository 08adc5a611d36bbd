//! The royalty rule: what each data provider gets from a model sale.
//!
//! When a model sale opens ([`super::BuyModel`]) the chain fixes its royalties, and the escrow
//! pays them only if the sale is paid:
//! 1. The pool is `floor(price * model_royalty_bps / 10000)` (a governance parameter, 10% by
//!    default; with the market fee at most 100% of the price together).
//! 2. It is split over the datasets the model version was trained on **by validator-attested
//!    rows**: a dataset validators verified weighs its rows, an unverified one weighs nothing,
//!    and dataset `i` gets `floor(pool * rows_i / sum_rows)`. What the rounding leaves (less
//!    than one NRC base unit per dataset) goes to the dataset with the most rows, the lowest id
//!    among equals. If no dataset is verified (`sum_rows == 0`) the split is equal, with the
//!    same rule for the remainder. A dataset whose provider org was removed is left out (its
//!    identities can neither spend nor move to a successor; the owner keeps that share). So the
//!    royalties add up to the pool exactly whenever one dataset's org is active.
//! 3. Each share is paid to the dataset's provider *as the sale opens* (a later change of
//!    provider does not redirect it; an identity moved to a successor takes its open royalties
//!    with it). A share of zero is not recorded.
//! 4. The market fee (`market_fee_bps`) goes to the reward pool as for a dataset sale, and the
//!    model's owner gets `price - fee - royalties`.
//! 5. Paid only when the sale is: on confirmation, or when the confirm window passes in silence.
//!    A refund (no key in time, or a key proven wrong) returns the whole price to the buyer and
//!    pays no royalty.
//!
//! Rows rather than an equal split because rows are what a provider contributed that the chain
//! knows; attested rather than declared because a declared count is the provider's word, and
//! a model's owner who also provides data could otherwise list a dummy dataset with
//! `u64::MAX` rows, add it to its job and take the whole pool. Lineage is one level deep: jobs
//! train on datasets only, so a model trained on another model's output has no such lineage on
//! chain and is out of scope.

use crate::address::Address;
use crate::amount::Amount;
use crate::escrow::Royalty;

/// One dataset a model was trained on, as the royalty rule needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoyaltySource {
    /// The dataset.
    pub dataset: u64,
    /// Its validator-attested rows, 0 when not verified (its weight in the split).
    pub rows: u64,
    /// Its provider now: who is paid.
    pub provider: Address,
    /// The provider's org.
    pub provider_org: String,
}

/// Splits `pool` over `datasets` by the rule above (see the module doc); the shares add up to
/// `pool` exactly, in the order the datasets are given, zero shares left out. No dataset: no
/// royalty (a model version always has at least one).
pub fn split_royalties(pool: Amount, datasets: &[RoyaltySource]) -> Vec<Royalty> {
    if datasets.is_empty() {
        return Vec::new();
    }
    let by_rows = datasets.iter().any(|d| d.rows > 0);
    let weight = |d: &RoyaltySource| if by_rows { u128::from(d.rows) } else { 1 };
    // At most 8 datasets of at most u64::MAX rows: no overflow.
    let total: u128 = datasets.iter().map(weight).sum();
    let mut shares: Vec<u128> = datasets
        .iter()
        .map(|d| mul_div_floor(pool.0, weight(d), total))
        .collect();
    let paid: u128 = shares.iter().sum();
    // The dataset with the most rows, the lowest id among equals (every weight is 1 in an equal
    // split, so the lowest id).
    let heir = (0..datasets.len())
        .min_by_key(|&i| (std::cmp::Reverse(weight(&datasets[i])), datasets[i].dataset));
    if let Some(i) = heir {
        shares[i] += pool.0 - paid;
    }
    datasets
        .iter()
        .zip(shares)
        .filter(|(_, share)| *share > 0)
        .map(|(d, share)| Royalty {
            dataset: d.dataset,
            to: d.provider,
            provider_org: d.provider_org.clone(),
            amount: Amount(share),
        })
        .collect()
}

/// `floor(a * b / c)` for `b <= c`, `c > 0`, exact for every `u128` (the product is taken in 256
/// bits): the result is at most `a`.
fn mul_div_floor(a: u128, b: u128, c: u128) -> u128 {
    debug_assert!(c > 0 && b <= c);
    if c == 0 {
        return 0;
    }
    let (hi, lo) = mul_wide(a, b);
    // Schoolbook binary long division of the 256-bit product by `c`.
    let mut rem: u128 = 0;
    let mut quotient: u128 = 0;
    for i in (0..256).rev() {
        let bit = if i >= 128 {
            (hi >> (i - 128)) & 1
        } else {
            (lo >> i) & 1
        };
        let carry = rem >> 127;
        rem = (rem << 1) | bit;
        if carry == 1 || rem >= c {
            rem = rem.wrapping_sub(c);
            if i < 128 {
                quotient |= 1 << i;
            }
        }
    }
    quotient
}

/// The 256-bit product of `a` and `b` as (high, low) halves.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & MASK);
    let (b1, b0) = (b >> 64, b & MASK);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let middle = (p00 >> 64) + (p01 & MASK) + (p10 & MASK);
    let lo = (p00 & MASK) | (middle << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (middle >> 64);
    (hi, lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dataset: u64, rows: u64) -> RoyaltySource {
        RoyaltySource {
            dataset,
            rows,
            provider: Address([dataset as u8; 32]),
            provider_org: format!("org{dataset}"),
        }
    }

    fn amounts(royalties: &[Royalty]) -> Vec<(u64, u128)> {
        royalties.iter().map(|r| (r.dataset, r.amount.0)).collect()
    }

    #[test]
    fn the_pool_is_split_by_rows_and_the_remainder_goes_to_the_largest_dataset() {
        type Case = (&'static str, u128, Vec<RoyaltySource>, Vec<(u64, u128)>);
        let cases: [Case; 7] = [
            (
                "one dataset takes the pool",
                100,
                vec![source(4, 10)],
                vec![(4, 100)],
            ),
            (
                "by rows, exactly",
                100,
                vec![source(1, 100), source(2, 300)],
                vec![(1, 25), (2, 75)],
            ),
            (
                "the remainder goes to the dataset with the most rows",
                10,
                vec![source(1, 100), source(2, 300)],
                vec![(1, 2), (2, 8)],
            ),
            (
                "among equals, to the lowest id, wherever it is listed",
                10,
                vec![source(5, 1), source(3, 1), source(4, 1)],
                vec![(5, 3), (3, 4), (4, 3)],
            ),
            (
                "no rows anywhere: an equal split",
                7,
                vec![source(2, 0), source(1, 0)],
                vec![(2, 3), (1, 4)],
            ),
            (
                "a zero share is left out",
                1,
                vec![source(1, 1), source(2, 1_000)],
                vec![(2, 1)],
            ),
            (
                "an empty pool pays nobody",
                0,
                vec![source(1, 5), source(2, 5)],
                vec![],
            ),
        ];
        for (desc, pool, datasets, expected) in cases {
            let royalties = split_royalties(Amount(pool), &datasets);
            assert_eq!(amounts(&royalties), expected, "{desc}");
            let total: u128 = royalties.iter().map(|r| r.amount.0).sum();
            assert_eq!(total, pool, "{desc}: the shares add up to the pool");
        }
    }

    #[test]
    fn each_share_goes_to_its_datasets_provider() {
        let royalties = split_royalties(Amount(10), &[source(1, 1), source(2, 1)]);
        assert_eq!(royalties[0].to, Address([1; 32]));
        assert_eq!(royalties[1].provider_org, "org2");
    }

    #[test]
    fn no_dataset_means_no_royalty() {
        assert!(split_royalties(Amount(10), &[]).is_empty());
    }

    #[test]
    fn huge_pools_and_row_counts_split_exactly() {
        let datasets: Vec<_> = (1..=8).map(|i| source(i, u64::MAX - i)).collect();
        let royalties = split_royalties(Amount(u128::MAX), &datasets);
        let total = royalties
            .iter()
            .try_fold(0u128, |s, r| s.checked_add(r.amount.0));
        assert_eq!(total, Some(u128::MAX));
        assert!(royalties.iter().all(|r| r.amount.0 >= u128::MAX / 9));
    }

    #[test]
    fn wide_multiplication_and_division_are_exact() {
        let max64 = u128::from(u64::MAX);
        // (a / c) * b + (a % c) * b / c: exact where (a % c) * b does not overflow.
        let split = |a: u128, b: u128, c: u128| a / c * b + a % c * b / c;
        let cases = [
            (12345, 678, 910, 12345 * 678 / 910),
            (0, 5, 9, 0),
            (u128::MAX, 1, 1, u128::MAX),
            (u128::MAX, 0, 1, 0),
            (u128::MAX, 3, 7, split(u128::MAX, 3, 7)),
            (u128::MAX - 5, 2, 3, split(u128::MAX - 5, 2, 3)),
            (u128::MAX, max64, max64 * 2, u128::MAX / 2),
        ];
        for (a, b, c, expected) in cases {
            assert_eq!(mul_div_floor(a, b, c), expected, "{a} * {b} / {c}");
        }
        assert_eq!(mul_wide(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(mul_wide(1 << 64, 1 << 64), (1, 0));
    }
}
