//! A dataset's leaderboard: the models scored by validators on its hidden evaluation split
//! ([`super::evaluation`]), best first within each target column.
//!
//! Computed on demand from the scored evaluations (a list query: no proof, latest state), so it
//! never disagrees with them. Entries are grouped by the column a model predicts (the job
//! spec's `schema.target`) and, within a target, by metric — a classifier's accuracy and a
//! regressor's RMSE of the same column are not comparable — then ranked from 1 by value in the
//! metric's direction (`higher_is_better`); ties go to the earlier evaluation, which scored
//! first. Each entry carries the model's lineage (every dataset it was trained on), its owner
//! and trainer orgs and its open listing, if it is for sale.

use std::cmp::Ordering;

use neurodata_proto::chain::v1 as pb;

use super::ModelsRead;
use super::evaluation::status;
use super::evaluation_view::EvaluationRead;
use crate::market::MarketRead;
use crate::state::{StateError, StateRead};
use crate::training::TrainingRead;

/// The column a job's model predicts, from its stored (canonical) spec.
fn target(job: &pb::Job) -> String {
    serde_json::from_str::<serde_json::Value>(&job.spec_json)
        .ok()
        .and_then(|v| v["schema"]["target"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Orders two scores of one metric, best first.
fn better(a: &pb::LeaderboardEntry, b: &pb::LeaderboardEntry) -> Ordering {
    // Values are JSON numbers the chain checked to be finite; comparing them as f64 is exact
    // enough for an order and happens only in this query, never in consensus state.
    let value = |e: &pb::LeaderboardEntry| e.score.parse::<f64>().unwrap_or(f64::NAN);
    let by_value = value(a).total_cmp(&value(b));
    let by_value = if a.higher_is_better {
        by_value.reverse()
    } else {
        by_value
    };
    by_value.then(a.evaluation_id.cmp(&b.evaluation_id))
}

/// The leaderboard of dataset `dataset_id` (empty when it does not exist or has no split).
pub fn leaderboard<S: StateRead>(
    state: &S,
    dataset_id: u64,
) -> Result<pb::Leaderboard, StateError> {
    let split_id = state
        .dataset(dataset_id)?
        .map(|d| d.evaluation_split)
        .unwrap_or(0);
    let mut board = pb::Leaderboard {
        dataset_id,
        split_id,
        entries: Vec::new(),
    };
    if split_id == 0 {
        return Ok(board);
    }
    let mut entries = Vec::new();
    for e in state.evaluations()? {
        if e.split_id != split_id || status(&e) != pb::EvaluationStatus::Scored {
            continue;
        }
        let Some(mv) = state.model_version(e.model_version)? else {
            continue;
        };
        let job = state.job(mv.job_id)?.unwrap_or_default();
        entries.push(pb::LeaderboardEntry {
            rank: 0,
            evaluation_id: e.id,
            model_version: mv.id,
            metric: e.metric.clone(),
            score: e.score.clone(),
            score_json: e.score_json.clone(),
            higher_is_better: e.higher_is_better,
            owner_org: mv.owner_org.clone(),
            trainer_org: job.worker_org.clone(),
            algorithm: mv.algorithm.clone(),
            target: target(&job),
            lineage: mv.dataset_ids.clone(),
            listing_id: state.open_listing_of(mv.id)?.unwrap_or(0),
            scored_height: e.finished_height,
        });
    }
    entries.sort_by(|a, b| {
        a.target
            .cmp(&b.target)
            .then(a.metric.cmp(&b.metric))
            .then_with(|| better(a, b))
    });
    let mut rank = 0u32;
    let mut group: Option<(String, String)> = None;
    for e in &mut entries {
        let this = (e.target.clone(), e.metric.clone());
        if group.as_ref() != Some(&this) {
            group = Some(this);
            rank = 0;
        }
        rank = rank.saturating_add(1);
        e.rank = rank;
    }
    board.entries = entries;
    Ok(board)
}
