//! `ndctl job`: submit a training job on data you bought (or provide), follow it through its
//! phases — drawn, accepted, result, beacon, commits, reveals, final — and cancel it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use neurodata_abci::events::EventKind;
use neurodata_abci::query;
use neurodata_abci::training;
use neurodata_client::msg;
use neurodata_proto::chain::v1 as pb;

use crate::dataset::{Gateway, gateway, record, submit};
use crate::{FeeArgs, Me, SignerArgs, amount};

/// Training jobs.
#[derive(Subcommand)]
pub enum JobCommand {
    /// Submits a job: the bounty goes into escrow at once; a registered worker is drawn at a
    /// later block; validators re-run sampled segments of its result before it is final.
    Submit {
        #[command(flatten)]
        fee: FeeArgs,
        /// A dataset to train on (repeatable): one you bought (and confirmed) or provide.
        #[arg(long = "dataset", required = true)]
        datasets: Vec<u64>,
        /// The trainer's job spec (JSON: schema, algorithm and hyper-parameters, seed, split,
        /// epochs); checked by the chain with the trainer's own rules.
        #[arg(long)]
        spec: PathBuf,
        /// NRC paid when the result is final (whole NRC): to the worker, and 10% of it to the
        /// validators whose re-runs agreed.
        #[arg(long)]
        bounty: String,
        /// NRC the worker locks when it accepts, lost if validators prove its result wrong.
        #[arg(long, default_value = "0")]
        stake: String,
        /// Minutes from now by which the job must be final, else the bounty comes back.
        #[arg(long, default_value_t = 60)]
        deadline_minutes: u64,
        /// Share of the trace's segments validators re-run (0 < s <= 1).
        #[arg(long, default_value_t = 0.1)]
        sample: f64,
        /// Follow the job until it is final or refunded, printing each phase.
        #[arg(long)]
        wait: bool,
    },
    /// Lists jobs.
    List {
        /// Only jobs you submitted.
        #[arg(long)]
        mine: bool,
        /// Only jobs on this dataset.
        #[arg(long)]
        dataset: Option<u64>,
        /// Only jobs not yet final or refunded.
        #[arg(long)]
        active: bool,
    },
    /// Shows a job: its spec, result and every phase with its height.
    Show {
        /// The job id.
        id: u64,
    },
    /// Shows where a job is: each phase with its height and the validators' commits and
    /// reveals; with --follow, until it is final or refunded.
    Status {
        /// The job id.
        id: u64,
        /// Keep printing new phases until the job ends.
        #[arg(long)]
        follow: bool,
    },
    /// Withdraws a job no worker has accepted yet; the bounty comes back.
    Cancel {
        #[command(flatten)]
        fee: FeeArgs,
        /// The job id.
        id: u64,
    },
}

fn sample_bps(sample: f64) -> anyhow::Result<u32> {
    if !(sample > 0.0 && sample <= 1.0) {
        bail!("--sample must be above 0 and at most 1 (a share of the segments), got {sample}");
    }
    Ok(((sample * 10_000.0).round() as u32).max(1))
}

fn status_name(job: &pb::Job) -> &'static str {
    training::status_name(training::status(job))
}

fn ended(job: &pb::Job) -> bool {
    matches!(
        training::status(job),
        pb::JobStatus::Final | pb::JobStatus::Refunded
    )
}

fn print_step(s: &pb::JobStep) {
    println!("  height {:>6}  {:<10} {}", s.height, s.step, s.detail);
}

fn print_attestation(job: &pb::Job) {
    let Some(att) = &job.attestation else { return };
    if att.beacon.is_empty() {
        println!("  beacon: drawn at height {}", att.beacon_height);
        return;
    }
    let phase = if att.revealing {
        format!("reveals until height {}", att.reveal_until)
    } else {
        format!("commits until height {}", att.commit_until)
    };
    println!("  attestation ({phase}):");
    for a in &att.attestors {
        let what = if !a.refused.is_empty() {
            format!("refused: {}", a.refused)
        } else if a.revealed {
            format!(
                "revealed {} at {}",
                if a.matches { "matches" } else { "MISMATCH" },
                a.reveal_height
            )
        } else if !a.commit.is_empty() {
            format!("committed at {}", a.commit_height)
        } else {
            "waiting".into()
        };
        println!(
            "    {} ({}, power {}): {what}",
            hex::encode(&a.validator),
            a.org_id,
            a.power
        );
    }
}

fn print_job(job: &pb::Job) {
    println!(
        "job {} ({}) by {} on datasets {:?}\n  bounty {} NRC, stake {} NRC, sample {}%, deadline {}",
        job.id,
        status_name(job),
        job.submitter_org,
        job.dataset_ids,
        job.bounty,
        job.stake,
        f64::from(job.sample_bps) / 100.0,
        job.deadline
    );
    if !job.worker.is_empty() {
        println!("  worker {} ({})", hex::encode(&job.worker), job.worker_org);
    }
    if let Some(r) = &job.result {
        println!(
            "  result at height {}: model {} metrics {}\n  trace root {} ({} segments), onnx {}",
            r.height,
            hex::encode(&r.model_sha256),
            r.metrics_json,
            hex::encode(&r.trace_root),
            r.segments,
            r.onnx_cid
        );
    }
    if job.model_version != 0 {
        println!("  model version {}", job.model_version);
    }
}

async fn load(g: &Gateway, id: u64) -> anyhow::Result<pb::Job> {
    record(g, query::job(id), &format!("job {id}")).await
}

/// Prints the job's phases as they happen until it ends.
async fn follow(g: &Gateway, id: u64) -> anyhow::Result<pb::Job> {
    let mut shown = 0;
    let mut last_att = None;
    loop {
        let job = load(g, id).await?;
        for s in job.steps.iter().skip(shown) {
            print_step(s);
        }
        shown = job.steps.len();
        let att = job.attestation.as_ref().map(|a| {
            a.attestors
                .iter()
                .map(|x| (x.commit.is_empty(), x.revealed))
                .collect::<Vec<_>>()
        });
        if att != last_att && !ended(&job) {
            print_attestation(&job);
            last_att = att;
        }
        if ended(&job) {
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs a job command.
pub async fn run(cmd: JobCommand, me: &Me) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Submit {
            fee,
            datasets,
            spec,
            bounty,
            stake,
            deadline_minutes,
            sample,
            wait,
        } => {
            let a = SignerArgs::new(me, Some(&fee));
            let spec_json = std::fs::read_to_string(&spec)
                .with_context(|| format!("cannot read the spec {}", spec.display()))?;
            // The chain checks it too; checking here answers before anything is signed.
            neurodata_trainer::JobSpec::from_json(&spec_json)
                .with_context(|| format!("{} is not a valid job spec", spec.display()))?;
            let g = gateway(&a).await?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let m = pb::SubmitJob {
                dataset_ids: datasets,
                spec_json,
                bounty: amount(&bounty)?.to_string(),
                stake: amount(&stake)?.to_string(),
                deadline: i64::try_from(now + deadline_minutes * 60)?,
                sample_bps: sample_bps(sample)?,
            };
            let r = submit(&a, &g, msg::submit_job(m)).await?;
            let id: u64 = r
                .events
                .iter()
                .filter(|e| EventKind::JobSubmitted == e.r#type.as_str())
                .flat_map(|e| e.attributes.iter())
                .find(|a| a.key == neurodata_abci::events::attr::JOB)
                .and_then(|a| a.value.parse().ok())
                .context("the chain accepted the job but reported no job id")?;
            println!(
                "job {id} submitted at height {} (tx {}); bounty {bounty} NRC in escrow",
                r.height, r.hash
            );
            if wait {
                let job = follow(&g, id).await?;
                print_job(&job);
            } else {
                println!("follow it with: ndctl job status {id} --follow");
            }
        }
        JobCommand::List {
            mine,
            dataset,
            active,
        } => {
            let a = SignerArgs::new(me, None);
            let g = gateway(&a).await?;
            let mut filter = pb::JobFilter {
                dataset_id: dataset.unwrap_or(0),
                ..Default::default()
            };
            if mine {
                filter.submitter = crate::cert_address(a.cert()?)?.0.to_vec();
            }
            if active {
                filter.statuses = vec![
                    pb::JobStatus::Queued as i32,
                    pb::JobStatus::Assigned as i32,
                    pb::JobStatus::Training as i32,
                    pb::JobStatus::Attesting as i32,
                ];
            }
            let (list, height) = g.conn.list(query::jobs(filter)).await?;
            println!("{} jobs at height {height}", list.jobs.len());
            for j in &list.jobs {
                println!(
                    "  job {:>4} {:<10} by {:<12} datasets {:?} bounty {} NRC{}",
                    j.id,
                    status_name(j),
                    j.submitter_org,
                    j.dataset_ids,
                    j.bounty,
                    if j.model_version != 0 {
                        format!(", model version {}", j.model_version)
                    } else {
                        String::new()
                    }
                );
            }
        }
        JobCommand::Show { id } => {
            let a = SignerArgs::new(me, None);
            let g = gateway(&a).await?;
            let job = load(&g, id).await?;
            print_job(&job);
            println!("  spec {}", job.spec_json);
            for s in &job.steps {
                print_step(s);
            }
            print_attestation(&job);
        }
        JobCommand::Status { id, follow: f } => {
            let a = SignerArgs::new(me, None);
            let g = gateway(&a).await?;
            if f {
                let job = follow(&g, id).await?;
                print_job(&job);
            } else {
                let job = load(&g, id).await?;
                println!("job {id}: {}", status_name(&job));
                for s in &job.steps {
                    print_step(s);
                }
                print_attestation(&job);
            }
        }
        JobCommand::Cancel { fee, id } => {
            let a = SignerArgs::new(me, Some(&fee));
            let g = gateway(&a).await?;
            let r = submit(&a, &g, msg::cancel_job(id)).await?;
            println!(
                "job {id} cancelled at height {}; its bounty is back",
                r.height
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_shares_map_to_basis_points_and_nonsense_is_refused() {
        assert_eq!(sample_bps(0.1).ok(), Some(1_000));
        assert_eq!(sample_bps(1.0).ok(), Some(10_000));
        assert_eq!(sample_bps(0.00001).ok(), Some(1));
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(sample_bps(bad).is_err(), "{bad}");
        }
    }
}
