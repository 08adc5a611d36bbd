//! Protobuf types of the NeuroData chain, generated at build time from `proto/`.
//!
//! Start with [`chain::v1::Tx`] (the signed envelope) and [`chain::v1::Message`] (what a
//! transaction can do); state records (`Org`, `Identity`, `Account`, `Proposal`) live in the same
//! package. These are wire types: the app converts them into checked domain types before use.

/// `neurodata.chain.v1`: transactions, governance, state records.
pub mod chain {
    /// Version 1 of the chain protocol.
    pub mod v1 {
        #![allow(missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/neurodata.chain.v1.rs"));
    }
}

pub use prost::Message as ProstMessage;
