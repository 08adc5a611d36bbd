//! Software upgrades, scheduled by governance.
//!
//! A passed `ScheduleUpgrade` proposal records a plan: a name and a height. At that height's
//! FinalizeBlock, before anything of the block runs, a node whose build knows the name runs the
//! upgrade's state migration and goes on; a node whose build does not stops with a message
//! naming the upgrade, having written nothing for that height. Its operator starts the new build,
//! CometBFT's handshake replays the block into it, and it migrates like the others. So no block
//! is ever executed under the old rules by some nodes and the new ones by others.
//!
//! An applied upgrade is recorded by name, and a build that does not know every applied upgrade
//! refuses to run the state at all (an old binary restarted by mistake after the upgrade).

use neurodata_proto::chain::v1 as pb;

use super::{GovernanceError, state_key};
use crate::TxError;
use crate::events::{EventKind, attr};
use crate::state::{Event, StateDelta, StateError, StateRead, StateWrite};

/// A state migration: runs once, at its upgrade's height, before the block's own work.
pub type Migration = fn(&mut StateDelta<&dyn StateRead>) -> Result<(), TxError>;

/// An upgrade this build knows.
#[derive(Clone, Copy)]
pub struct Upgrade {
    /// The name governance schedules it by.
    pub name: &'static str,
    /// What it changes in the state.
    pub migrate: Migration,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade").field("name", &self.name).finish()
    }
}

/// The upgrades of this build, oldest first. Empty: this is the chain's first release. A
/// release that changes the state's meaning adds its upgrade here with its migration.
pub fn known() -> Vec<Upgrade> {
    Vec::new()
}

/// Upgrade names: 1..=64 of `a-z0-9.-` (safe in keys, logs and file names).
pub fn check_name(name: &str) -> Result<(), GovernanceError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(GovernanceError::BadUpgradeName {
            name: name.to_owned(),
        })
    }
}

/// Longest `info` of a plan.
pub const MAX_INFO_BYTES: usize = 1024;

/// The pending plan.
pub fn plan<S: StateRead>(state: &S) -> Result<Option<pb::UpgradePlan>, StateError> {
    state.get_proto(state_key::upgrade_plan())
}

/// Every applied upgrade, by name.
pub fn applied<S: StateRead>(state: &S) -> Result<Vec<pb::UpgradePlan>, StateError> {
    state.prefix_proto(state_key::UPGRADES_APPLIED)
}

/// The preflight of a `ScheduleUpgrade` action at `height` (at submission and at execution).
pub fn check_schedule<S: StateRead>(
    state: &S,
    name: &str,
    height: u64,
    current: u64,
) -> Result<(), TxError> {
    if height == 0 {
        let pending = plan(state)?;
        if pending.as_ref().is_none_or(|p| p.name != name) {
            return Err(GovernanceError::NoUpgradeToCancel {
                name: name.to_owned(),
                pending: pending.map_or_else(|| "none".to_owned(), |p| p.name),
            }
            .into());
        }
        return Ok(());
    }
    if height <= current {
        return Err(GovernanceError::UpgradeHeightPassed { height, current }.into());
    }
    if let Some(done) = state.get_proto::<pb::UpgradePlan>(&state_key::upgrade_applied(name))? {
        return Err(GovernanceError::UpgradeAlreadyApplied {
            name: name.to_owned(),
            height: done.applied_height,
        }
        .into());
    }
    Ok(())
}

/// Executes a passed `ScheduleUpgrade`: records the plan (replacing a pending one) or cancels.
pub fn schedule<S: StateWrite>(
    state: &mut S,
    name: &str,
    height: u64,
    info: &str,
    proposal_id: u64,
) {
    if height == 0 {
        state.delete(state_key::upgrade_plan().to_owned());
        state.emit(Event::new(EventKind::UpgradeCancelled).attr(attr::UPGRADE, name));
        return;
    }
    state.put_proto(
        state_key::upgrade_plan().to_owned(),
        &pb::UpgradePlan {
            name: name.to_owned(),
            height,
            info: info.to_owned(),
            proposal_id,
            applied_height: 0,
        },
    );
    state.emit(
        Event::new(EventKind::UpgradeScheduled)
            .attr(attr::UPGRADE, name)
            .attr(attr::AT_HEIGHT, height),
    );
}

/// What a node does at the start of a block.
#[derive(Debug)]
pub enum AtBlock {
    /// No upgrade here.
    Nothing,
    /// This build knows the upgrade due now: migrate.
    Migrate(Upgrade, pb::UpgradePlan),
    /// An upgrade is due now that this build does not know: stop.
    Halt(pb::UpgradePlan),
}

/// What the plan asks at `height` of a build knowing `upgrades`.
pub fn at_block<S: StateRead>(
    state: &S,
    height: u64,
    upgrades: &[Upgrade],
) -> Result<AtBlock, StateError> {
    let Some(plan) = plan(state)?.filter(|p| p.height == height) else {
        return Ok(AtBlock::Nothing);
    };
    Ok(match upgrades.iter().find(|u| u.name == plan.name) {
        Some(u) => AtBlock::Migrate(*u, plan),
        None => AtBlock::Halt(plan),
    })
}

/// Runs `upgrade`'s migration for `plan` at `height` in `state`, records it as applied and
/// clears the plan.
pub fn migrate(
    state: &mut StateDelta<&dyn StateRead>,
    upgrade: &Upgrade,
    mut plan: pb::UpgradePlan,
    height: u64,
) -> Result<(), TxError> {
    (upgrade.migrate)(state)?;
    state.delete(state_key::upgrade_plan().to_owned());
    plan.applied_height = height;
    state.put_proto(state_key::upgrade_applied(&plan.name), &plan);
    state.emit(
        Event::new(EventKind::UpgradeApplied)
            .attr(attr::UPGRADE, &plan.name)
            .attr(attr::AT_HEIGHT, height),
    );
    Ok(())
}

/// The applied upgrades this build does not know (it must not run this state).
pub fn unknown_applied<S: StateRead>(
    state: &S,
    upgrades: &[Upgrade],
) -> Result<Vec<pb::UpgradePlan>, StateError> {
    Ok(applied(state)?
        .into_iter()
        .filter(|p| !upgrades.iter().any(|u| u.name == p.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryState;

    fn bump(state: &mut StateDelta<&dyn StateRead>) -> Result<(), TxError> {
        state.put_raw("migrated".into(), b"yes".to_vec());
        Ok(())
    }

    const V2: Upgrade = Upgrade {
        name: "v2",
        migrate: bump,
    };

    #[test]
    fn a_plan_halts_a_build_that_does_not_know_it_and_migrates_one_that_does() {
        let base = MemoryState::default();
        let mut s = StateDelta::new(&base);
        check_schedule(&s, "v2", 10, 5).unwrap();
        schedule(&mut s, "v2", 10, "release 2", 7);
        assert!(matches!(at_block(&s, 9, &[]).unwrap(), AtBlock::Nothing));
        let AtBlock::Halt(p) = at_block(&s, 10, &[]).unwrap() else {
            panic!("an old build halts")
        };
        assert_eq!((p.name.as_str(), p.proposal_id), ("v2", 7));
        let AtBlock::Migrate(u, due) = at_block(&s, 10, &[V2]).unwrap() else {
            panic!("a new build migrates")
        };
        let changes = {
            let reader: &dyn StateRead = &s;
            let mut m = StateDelta::new(reader);
            migrate(&mut m, &u, due, 10).unwrap();
            m.into_changes()
        };
        s.apply(changes);
        assert_eq!(s.get_raw("migrated").unwrap(), Some(b"yes".to_vec()));
        assert!(plan(&s).unwrap().is_none());
        assert_eq!(applied(&s).unwrap()[0].applied_height, 10);
        assert_eq!(unknown_applied(&s, &[]).unwrap().len(), 1);
        assert!(unknown_applied(&s, &[V2]).unwrap().is_empty());
        // Once applied, the name cannot be scheduled again.
        assert!(matches!(
            check_schedule(&s, "v2", 20, 11),
            Err(TxError::Governance(
                GovernanceError::UpgradeAlreadyApplied { height: 10, .. }
            ))
        ));
    }

    #[test]
    fn schedules_in_the_past_bad_names_and_stray_cancels_are_refused() {
        let base = MemoryState::default();
        let mut s = StateDelta::new(&base);
        assert!(matches!(
            check_schedule(&s, "v2", 5, 5),
            Err(TxError::Governance(
                GovernanceError::UpgradeHeightPassed { .. }
            ))
        ));
        assert!(matches!(
            check_schedule(&s, "v2", 0, 5),
            Err(TxError::Governance(
                GovernanceError::NoUpgradeToCancel { .. }
            ))
        ));
        for bad in ["", "V2", "v 2", "v2/x", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("v1.3-fees").unwrap();
        schedule(&mut s, "v2", 10, "", 1);
        assert!(check_schedule(&s, "v3", 0, 5).is_err());
        check_schedule(&s, "v2", 0, 5).unwrap();
        schedule(&mut s, "v2", 0, "", 2);
        assert!(plan(&s).unwrap().is_none());
    }
}
