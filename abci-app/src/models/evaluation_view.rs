//! Where evaluations live in the state, and their typed reads and writes: the only code that
//! uses evaluation state keys.

use neurodata_proto::chain::v1 as pb;

use crate::market::view::read_u64;
use crate::state::{StateError, StateRead, StateWrite};

/// Evaluation state keys.
pub mod state_key {
    /// Prefix of all evaluations.
    pub const EVALUATIONS: &str = "models/evaluation/";

    /// Evaluation `id` (zero-padded so keys sort by id).
    pub fn evaluation(id: u64) -> String {
        format!("{EVALUATIONS}{id:020}")
    }

    /// The id the next evaluation gets.
    pub fn next_evaluation_id() -> &'static str {
        "models/next-evaluation-id"
    }

    /// Index: the latest evaluation of model version `model_version` on split `split` (value:
    /// 8-byte big-endian id), which decides whether another may be requested.
    pub fn evaluation_by_subject(model_version: u64, split: u64) -> String {
        format!("models/evaluation-by-subject/{model_version:020}/{split:020}")
    }

    /// Prefix of the index of attesting evaluations.
    pub const EVALUATIONS_DUE: &str = "models/evaluation-due/";

    /// Index entry (value: empty): evaluation `id` is attesting and settles at the end of
    /// block `height` at the latest (its reveal deadline). Sorted by that height, then id.
    pub fn evaluation_due(height: u64, id: u64) -> String {
        format!("{EVALUATIONS_DUE}{height:020}/{id:020}")
    }
}

/// The height an evaluation's due entry is filed under: its reveal deadline while it attests,
/// none once settled.
fn due_height(e: &pb::Evaluation) -> Option<u64> {
    (e.status == pb::EvaluationStatus::Attesting as i32)
        .then(|| e.attestation.as_ref().map(|a| a.reveal_until))
        .flatten()
}

/// Reads of evaluation records.
pub trait EvaluationRead: StateRead + Sized {
    /// Evaluation `id`.
    fn evaluation(&self, id: u64) -> Result<Option<pb::Evaluation>, StateError> {
        self.get_proto(&state_key::evaluation(id))
    }

    /// Every evaluation, ascending by id.
    fn evaluations(&self) -> Result<Vec<pb::Evaluation>, StateError> {
        self.prefix_proto(state_key::EVALUATIONS)
    }

    /// The id the next evaluation gets.
    fn next_evaluation_id(&self) -> Result<u64, StateError> {
        Ok(read_u64(self, state_key::next_evaluation_id())?.unwrap_or(1))
    }

    /// The latest evaluation of `model_version` on `split`, if any.
    fn evaluation_of(&self, model_version: u64, split: u64) -> Result<Option<u64>, StateError> {
        read_u64(
            self,
            &state_key::evaluation_by_subject(model_version, split),
        )
    }

    /// Ids of the attesting evaluations, by reveal deadline, then id.
    fn attesting_evaluations(&self) -> Result<Vec<u64>, StateError> {
        self.prefix_raw(state_key::EVALUATIONS_DUE)?
            .into_iter()
            .map(|(key, _)| {
                key.rsplit('/')
                    .next()
                    .and_then(|id| id.parse().ok())
                    .ok_or(StateError::Corrupt {
                        key,
                        reason: "evaluation-due entry without an id".into(),
                    })
            })
            .collect()
    }
}

impl<T: StateRead + Sized> EvaluationRead for T {}

/// Writes of evaluation records.
pub trait EvaluationWrite: StateWrite + EvaluationRead {
    /// Stores an evaluation, keeping its subject index and its due entry in step with its status
    /// and reveal deadline.
    fn put_evaluation(&mut self, e: &pb::Evaluation) -> Result<(), StateError> {
        if let Some(height) = self.evaluation(e.id)?.as_ref().and_then(due_height) {
            self.delete(state_key::evaluation_due(height, e.id));
        }
        self.put_proto(state_key::evaluation(e.id), e);
        if let Some(height) = due_height(e) {
            self.put_raw(state_key::evaluation_due(height, e.id), Vec::new());
        }
        self.put_raw(
            state_key::evaluation_by_subject(e.model_version, e.split_id),
            e.id.to_be_bytes().to_vec(),
        );
        Ok(())
    }

    /// Sets the next evaluation id.
    fn put_next_evaluation_id(&mut self, id: u64) {
        self.put_raw(
            state_key::next_evaluation_id().into(),
            id.to_be_bytes().to_vec(),
        );
    }
}

impl<T: StateWrite + Sized> EvaluationWrite for T {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::state_key::*;
    use super::*;
    use crate::state::{MemoryState, StateDelta};

    #[test]
    fn evaluation_keys_sort_by_id_and_indexes_live_elsewhere() {
        assert!(evaluation(9) < evaluation(10));
        assert!(evaluation(1).starts_with(EVALUATIONS));
        assert!(!evaluation_by_subject(1, 2).starts_with(EVALUATIONS));
        assert!(!evaluation_due(1, 2).starts_with(EVALUATIONS));
        assert!(!next_evaluation_id().starts_with(EVALUATIONS));
        assert!(evaluation_due(9, 5) < evaluation_due(10, 1));
        assert!(evaluation_due(10, 1).starts_with(EVALUATIONS_DUE));
    }

    #[test]
    fn the_due_entry_follows_the_reveal_deadline_and_goes_when_settled() {
        let state = MemoryState::default();
        let mut d = StateDelta::new(&state);
        let mut e = pb::Evaluation {
            id: 3,
            model_version: 1,
            split_id: 2,
            status: pb::EvaluationStatus::Attesting as i32,
            attestation: Some(pb::ResultAttestation {
                reveal_until: 90,
                ..Default::default()
            }),
            ..Default::default()
        };
        d.put_evaluation(&e).unwrap();
        assert_eq!(d.attesting_evaluations().unwrap(), vec![3]);
        assert!(d.get_raw(&evaluation_due(90, 3)).unwrap().is_some());
        e.attestation.as_mut().unwrap().reveal_until = 40;
        d.put_evaluation(&e).unwrap();
        assert!(d.get_raw(&evaluation_due(90, 3)).unwrap().is_none());
        assert_eq!(d.attesting_evaluations().unwrap(), vec![3]);
        e.status = pb::EvaluationStatus::Scored as i32;
        d.put_evaluation(&e).unwrap();
        assert!(d.attesting_evaluations().unwrap().is_empty());
        assert_eq!(d.evaluation_of(1, 2).unwrap(), Some(3));
        assert_eq!(d.evaluation(3).unwrap(), Some(e));
    }
}
