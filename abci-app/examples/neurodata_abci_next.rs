//! The upgrade rehearsal's "next release": `neurodata-abci` built with one more upgrade,
//! `rehearsal-v2`, whose state migration raises the minimum fee to 2 NRC base units (a fee rule
//! change is the kind of state migration a real release makes). The end-to-end test schedules
//! it by governance, checks that the current build stops at its height, and continues the chain
//! with this build.

use neurodata_abci::TxError;
use neurodata_abci::amount::Amount;
use neurodata_abci::governance::upgrade::{self, Upgrade};
use neurodata_abci::governance::{GovernanceRead as _, GovernanceWrite as _};
use neurodata_abci::state::{StateDelta, StateRead};

fn raise_min_fee(state: &mut StateDelta<&dyn StateRead>) -> Result<(), TxError> {
    let mut params = state.params()?;
    params.min_fee = params.min_fee.max(Amount(2));
    state.put_params(&params);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut upgrades = upgrade::known();
    upgrades.push(Upgrade {
        name: "rehearsal-v2",
        migrate: raise_min_fee,
    });
    neurodata_abci::server::run(upgrades).await
}
