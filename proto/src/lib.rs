//! Protobuf types of the NeuroData chain and the gateway's gRPC services, generated at build time
//! from `proto/`.
//!
//! Start with [`chain::v1::Tx`] (the signed envelope) and [`chain::v1::Message`] (what a
//! transaction can do); state records (`Org`, `Identity`, `Account`, `Proposal`) live in the same
//! package. These are wire types: the app converts them into checked domain types before use.
//! [`gateway::v1`] holds the gateway API's messages and, with the `grpc` feature, the services a
//! member org's gateway serves (clients and servers).

/// `neurodata.chain.v1`: transactions, governance, state records.
pub mod chain {
    /// Version 1 of the chain protocol.
    pub mod v1 {
        #![allow(missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/neurodata.chain.v1.rs"));
    }
}

/// `neurodata.gateway.v1`: the gateway's gRPC services.
pub mod gateway {
    /// Version 1 of the gateway API.
    pub mod v1 {
        #![allow(missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/neurodata.gateway.v1.rs"));
    }
}

/// Every file descriptor of `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/neurodata_descriptor.bin"));

pub use prost::Message as ProstMessage;
