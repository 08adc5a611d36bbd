//! Where escrow records live in the state.

use crate::address::Address;

/// Prefix of all purchases.
pub const PURCHASES: &str = "escrow/purchase/";

/// Purchase `id` (zero-padded so keys sort by id).
pub fn purchase(id: u64) -> String {
    format!("{PURCHASES}{id:020}")
}

/// The id the next purchase gets.
pub fn next_purchase_id() -> &'static str {
    "escrow/next-purchase-id"
}

/// Index: the buyer's live (not refunded) purchase of a dataset (value: 8-byte purchase id).
/// Present means the buyer has or is getting access; it also blocks a second purchase.
pub fn by_buyer(buyer: &Address, dataset: u64) -> String {
    format!("{}{dataset:020}", by_buyer_prefix(buyer))
}

/// Prefix of every access mark of `buyer`.
pub fn by_buyer_prefix(buyer: &Address) -> String {
    format!("escrow/by-buyer/{}/", buyer.to_hex())
}

/// Index: the buyer's live (not refunded) purchase of a model listing (value: 8-byte purchase
/// id). Model marks live under a prefix of their own, so a listing id is never read as a dataset
/// id (training checks a member's dataset marks).
pub fn by_buyer_model(buyer: &Address, listing: u64) -> String {
    format!("{}{listing:020}", by_buyer_model_prefix(buyer))
}

/// Prefix of every model access mark of `buyer`.
pub fn by_buyer_model_prefix(buyer: &Address) -> String {
    format!("escrow/by-buyer-model/{}/", buyer.to_hex())
}

/// Count of open validation requests of `org` (value: 8-byte big-endian count).
pub fn open_validations(org: &str) -> String {
    format!("escrow/open-validations/{org}")
}

/// Prefix of every schedule entry (every open purchase has exactly one).
pub const DUE: &str = "escrow/due/";

/// Prefix of the purchases that close by themselves at the end of block `height`.
pub fn due_at(height: u64) -> String {
    format!("{DUE}{height:020}/")
}

/// Index entry: purchase `id` is due at `height`.
pub fn due(height: u64, id: u64) -> String {
    format!("{}{id:020}", due_at(height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_group_by_height() {
        assert!(due(7, 3).starts_with(&due_at(7)));
        assert!(!due(70, 3).starts_with(&due_at(7)));
        assert!(purchase(2) < purchase(10));
    }

    #[test]
    fn model_marks_never_fall_under_a_buyers_dataset_marks() {
        let buyer = Address([7; 32]);
        assert!(!by_buyer_model(&buyer, 3).starts_with(&by_buyer_prefix(&buyer)));
        assert!(!by_buyer(&buyer, 3).starts_with(&by_buyer_model_prefix(&buyer)));
        assert!(by_buyer_model(&buyer, 3).starts_with(&by_buyer_model_prefix(&buyer)));
    }
}
