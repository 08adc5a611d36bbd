//! NRC amounts: integer base units (u128) with one canonical decimal text form.

use std::fmt;
use std::str::FromStr;

/// An amount of NRC in base units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub u128);

/// Why a decimal amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Empty string.
    #[error("amount is empty")]
    Empty,
    /// Characters other than ASCII digits, or a leading zero (two texts for one number would make
    /// two sign-byte forms of one transaction).
    #[error("amount {0:?} is not a canonical decimal (digits only, no leading zeros)")]
    NotCanonical(String),
    /// More than u128 can hold.
    #[error("amount {0:?} overflows u128")]
    Overflow(String),
}

impl Amount {
    /// Zero NRC.
    pub const ZERO: Amount = Amount(0);

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self - other`, or `None` when `other` is larger.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

impl FromStr for Amount {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(AmountError::Empty);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
            return Err(AmountError::NotCanonical(s.to_owned()));
        }
        s.parse::<u128>()
            .map(Amount)
            .map_err(|_| AmountError::Overflow(s.to_owned()))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_decimals_parse_and_print_back() {
        for s in ["0", "1", "340282366920938463463374607431768211455"] {
            assert_eq!(s.parse::<Amount>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn non_canonical_or_overflowing_amounts_are_refused() {
        assert_eq!("".parse::<Amount>(), Err(AmountError::Empty));
        for s in ["01", "-1", "+1", "1.0", " 1", "1e3"] {
            assert!(
                matches!(s.parse::<Amount>(), Err(AmountError::NotCanonical(_))),
                "{s}"
            );
        }
        assert!(matches!(
            "340282366920938463463374607431768211456".parse::<Amount>(),
            Err(AmountError::Overflow(_))
        ));
    }
}
