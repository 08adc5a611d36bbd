//! `trainer`: runs, verifies, evaluates and applies NeuroData training jobs.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use neurodata_trainer::job::{self, Observer};
use neurodata_trainer::model::{Model, Predictions};
use neurodata_trainer::{JobSpec, data, kernels, onnx, trace};

#[derive(Parser)]
#[command(
    name = "trainer",
    version,
    about = "Deterministic, verifiable training of tabular models"
)]
struct Cli {
    /// Kernel threads (results do not depend on it); defaults to the CPUs available.
    #[arg(long, global = true, env = "NEURODATA_TRAINER_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a job: writes the model, its ONNX export, metrics, trace and result to --out.
    ///
    /// Refuses an --out directory that holds an earlier run's files unless given --force.
    Run {
        /// Job spec (JSON).
        #[arg(long)]
        spec: PathBuf,
        /// Data file (.csv, or .jsonl/.ndjson).
        #[arg(long)]
        data: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite the files of an earlier run in --out.
        #[arg(long)]
        force: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Re-run segments of a run from its checkpoints and check them against its trace.
    ///
    /// Segments are given (--segment, --all), sampled (--sample with --beacon), or this
    /// validator's share of a job's assignment (--job-id, --validator, --validators,
    /// --sample-bps and --beacon).
    Verify {
        /// The run's output directory.
        #[arg(long)]
        out: PathBuf,
        /// The data file the run used.
        #[arg(long)]
        data: PathBuf,
        /// Segment to re-run (checkpoint i to i+1); repeatable.
        #[arg(long = "segment")]
        segments: Vec<usize>,
        /// Share of segments to re-run, drawn with --beacon.
        #[arg(long, requires = "beacon")]
        sample: Option<f64>,
        /// Hex randomness (e.g. a block hash after the result) choosing sampled segments.
        #[arg(long)]
        beacon: Option<String>,
        /// Re-run every segment.
        #[arg(long)]
        all: bool,
        /// On-chain id of the job: re-run the segments assigned to --validator among
        /// --validators by --beacon (the hash of a block after the result's block).
        #[arg(
            long,
            requires_all = ["validator", "validators", "sample_bps", "beacon"],
            conflicts_with_all = ["segments", "sample", "all"]
        )]
        job_id: Option<u64>,
        /// This validator's address (40 hex digits, as CometBFT prints it).
        #[arg(long, requires = "job_id")]
        validator: Option<String>,
        /// Every validator's address (40 hex digits each), comma-separated, in any order.
        #[arg(long, value_delimiter = ',', requires = "job_id")]
        validators: Vec<String>,
        /// Share of segments sampled, in basis points (1 to 10000).
        #[arg(long, requires = "job_id", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        sample_bps: Option<u32>,
        /// Print one JSON verdict (segments, matches, segments_digest, model_sha256,
        /// trace_root, error) and exit 0 whenever the run could be checked, matching or not.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate the ONNX export with tract against the native model on the test split.
    Eval {
        /// The run's output directory (model.safetensors and model.onnx).
        #[arg(long)]
        out: PathBuf,
        /// The data file.
        #[arg(long)]
        data: PathBuf,
        /// Another ONNX file to evaluate instead of the run's.
        #[arg(long)]
        onnx: Option<PathBuf>,
    },
    /// Predict rows of a data file (the target column may be absent); CSV to stdout.
    Predict {
        /// Model file.
        #[arg(long)]
        model: PathBuf,
        /// Data file.
        #[arg(long)]
        data: PathBuf,
        /// Predict with this ONNX export through tract instead of the native model.
        #[arg(long)]
        onnx: Option<PathBuf>,
    },
}

struct Progress {
    bar: Option<ProgressBar>,
    per_epoch: Option<u64>,
    epochs: u64,
}

impl Observer for Progress {
    fn started(&mut self, total: Option<u64>, per_epoch: Option<u64>) {
        let Some(bar) = &self.bar else { return };
        self.per_epoch = per_epoch;
        match (total, per_epoch) {
            (Some(total), Some(per)) if per > 0 => {
                self.epochs = total / per;
                bar.set_length(per);
                bar.set_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(format!("epoch 1/{}", self.epochs));
            }
            _ => {
                bar.set_style(
                    ProgressStyle::with_template("{spinner} growing tree: {pos} node expansions")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
            }
        }
    }

    fn step(&mut self, step: u64, loss: Option<f32>) {
        let Some(bar) = &self.bar else { return };
        match self.per_epoch {
            Some(per) if per > 0 => {
                let in_epoch = (step - 1) % per + 1;
                bar.set_position(in_epoch);
                if let Some(loss) = loss {
                    bar.set_message(format!("loss {loss:.4}"));
                }
                if in_epoch == per && step / per < self.epochs {
                    bar.println(format!(
                        "epoch {}/{}: loss {:.4}",
                        step / per,
                        self.epochs,
                        loss.unwrap_or(0.0)
                    ));
                    bar.set_prefix(format!("epoch {}/{}", step / per + 1, self.epochs));
                    bar.reset();
                }
            }
            _ => bar.set_position(step),
        }
    }
}

/// Prints an error once, its causes on one line (`{:#}`), and exits with status 1; returning the
/// error from `main` would print it with `{:?}`, a backtrace included when RUST_BACKTRACE is set.
fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    kernels::set_threads(threads);
    match cli.command {
        Command::Run {
            spec,
            data,
            out,
            force,
            quiet,
        } => {
            let text = std::fs::read_to_string(&spec)
                .with_context(|| format!("reading {}", spec.display()))?;
            let spec = JobSpec::from_json(&text).with_context(|| spec.display().to_string())?;
            if !force {
                job::check_output_dir(&out)?;
            }
            let bar = (!quiet).then(|| ProgressBar::new(0));
            let mut progress = Progress {
                bar,
                per_epoch: None,
                epochs: 0,
            };
            let result = job::run(&spec, &data, &out, &mut progress);
            if let Some(bar) = &progress.bar {
                bar.finish_and_clear();
            }
            println!("{}", serde_json::to_string_pretty(&result?)?);
        }
        Command::Verify {
            out,
            data,
            segments,
            sample,
            beacon,
            all,
            job_id,
            validator,
            validators,
            sample_bps,
            json,
        } => {
            let selection = match job_id {
                Some(job_id) => Selection::Assigned {
                    job_id,
                    me: address(validator.as_deref().unwrap_or_default(), "--validator")?,
                    validators: validators
                        .iter()
                        .map(|v| address(v, "--validators"))
                        .collect::<anyhow::Result<_>>()?,
                    sample_bps: sample_bps.unwrap_or(10_000),
                    beacon: hex::decode(beacon.unwrap_or_default())
                        .context("--beacon must be hex")?,
                },
                None => {
                    if let Some(fraction) = sample
                        && !(fraction > 0.0 && fraction <= 1.0)
                    {
                        bail!("--sample must be in (0, 1], got {fraction}");
                    }
                    let beacon = match (sample, beacon) {
                        (Some(_), Some(b)) => hex::decode(b).context("--beacon must be hex")?,
                        _ => Vec::new(),
                    };
                    Selection::Listed {
                        segments,
                        sample,
                        beacon,
                        all,
                    }
                }
            };
            if let Selection::Assigned { me, validators, .. } = &selection
                && !validators.contains(me)
            {
                bail!("--validator {} is not among --validators", hex::encode(me));
            }
            let trace = job::read_trace(&out);
            let segments = match &trace {
                Ok(trace) => selection.segments(trace),
                Err(_) => Vec::new(),
            };
            // A trace.json that is not a trace is a finding for --json, not a reason to stop.
            if segments.is_empty() && (trace.is_ok() || !json) {
                trace?;
                bail!(
                    "nothing to verify: give --segment, --sample with --beacon, --all, or \
                     --job-id with --validator, --validators, --sample-bps and --beacon"
                );
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&job::verdict(&out, &data, &segments)?)?
                );
                return Ok(());
            }
            let trace = trace?;
            let checks = job::verify(&out, &data, &segments)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "trace_root": trace.root,
                    "segments": trace.segments(),
                    "verified": checks,
                }))?
            );
        }
        Command::Eval { out, data, onnx } => {
            let model = read_model(&out.join("model.safetensors"))?;
            let onnx_path = onnx.unwrap_or_else(|| out.join("model.onnx"));
            let bytes = std::fs::read(&onnx_path)
                .with_context(|| format!("reading {}", onnx_path.display()))?;
            let report = neurodata_trainer::eval(&model, &bytes, &data)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.ok {
                bail!(
                    "ONNX predictions differ from the native model by {} (tolerance {})",
                    report.max_scaled_diff,
                    report.tolerance
                );
            }
        }
        Command::Predict { model, data, onnx } => {
            let model = read_model(&model)?;
            let table = data::Table::read_for_prediction(&data, &model.spec.schema)?;
            let rows: Vec<usize> = (0..table.rows()).collect();
            let predictions = match onnx {
                None => model.predict(&table, &rows)?,
                Some(path) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let x = model.preprocessing.encode(&table, &rows, false);
                    onnx::evaluate(
                        &bytes,
                        &x,
                        rows.len(),
                        model.preprocessing.width(),
                        !model.preprocessing.classes.is_empty(),
                    )?
                }
            };
            write_predictions(&model, &predictions)?;
        }
    }
    Ok(())
}

/// How `verify` chooses the segments to re-run.
enum Selection {
    /// --segment, --all and --sample with --beacon, together.
    Listed {
        segments: Vec<usize>,
        sample: Option<f64>,
        beacon: Vec<u8>,
        all: bool,
    },
    /// This validator's share of the job's assignment ([`trace::segments_for`]).
    Assigned {
        job_id: u64,
        me: [u8; 20],
        validators: Vec<[u8; 20]>,
        sample_bps: u32,
        beacon: Vec<u8>,
    },
}

impl Selection {
    /// The segments to re-run, ascending and distinct.
    fn segments(&self, t: &trace::Trace) -> Vec<usize> {
        let mut chosen = match self {
            Selection::Listed {
                segments,
                sample,
                beacon,
                all,
            } => {
                let mut chosen = segments.clone();
                if *all {
                    chosen.extend(0..t.segments());
                }
                if let Some(fraction) = sample {
                    chosen.extend(t.sample(*fraction, beacon));
                }
                chosen
            }
            Selection::Assigned {
                job_id,
                me,
                validators,
                sample_bps,
                beacon,
            } => trace::segments_for(beacon, *job_id, validators, t.segments(), *sample_bps, me),
        };
        chosen.sort_unstable();
        chosen.dedup();
        chosen
    }
}

/// A CometBFT validator address: 20 bytes as 40 hex digits (an optional `0x` allowed).
fn address(text: &str, flag: &str) -> anyhow::Result<[u8; 20]> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0x").unwrap_or(digits);
    let bytes = hex::decode(digits).with_context(|| format!("{flag}: {text:?} is not hex"))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!(
            "{flag}: {text:?} is {} bytes, a validator address is 20",
            b.len()
        )
    })
}

fn read_model(path: &Path) -> anyhow::Result<Model> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Model::from_bytes(&bytes).with_context(|| format!("{}", path.display()))
}

fn write_predictions(model: &Model, p: &Predictions) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let classes = &model.preprocessing.classes;
    let labels = p.labels(classes);
    match p {
        Predictions::Classes(probs) => {
            let header: Vec<String> = classes.iter().map(|c| format!("p_{c}")).collect();
            writeln!(out, "row,label,{}", header.join(","))?;
            for (i, (label, probs)) in labels.iter().zip(probs).enumerate() {
                let cells: Vec<String> = probs.iter().map(|v| format!("{v:.6}")).collect();
                writeln!(out, "{i},{label},{}", cells.join(","))?;
            }
        }
        Predictions::Values(v) => {
            writeln!(out, "row,prediction")?;
            for (i, v) in v.iter().enumerate() {
                writeln!(out, "{i},{v}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
