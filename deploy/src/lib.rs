//! Checks of what NeuroData ships for a cluster: the Helm chart (`helm/neurodata`, tested in
//! `tests/chart.rs` against a real control plane) and the container images (`images/`, parsed
//! and checked against the workspace by [`dockerfile`], tested in `tests/images.rs`).

pub mod dockerfile;
