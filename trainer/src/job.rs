//! A training job end to end: read and split the data, train with checkpoints, write the model,
//! its ONNX export, metrics, trace and result; and the validator's side, re-running segments.
//!
//! Output directory:
//! - `model.safetensors` — the model file (its SHA-256 is the model's identity)
//! - `model.onnx` — the ONNX export
//! - `metrics.json` — test-split metrics
//! - `trace.json` — checkpoint digests and their Merkle root
//! - `checkpoints/NNNNN.ckpt` — the checkpoints themselves, for segment verification
//! - `split.json` — row indices of the train and test splits
//! - `result.json` — what a trainer submits: model, ONNX, data and spec digests, trace root,
//!   metrics

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::TrainError;
use crate::data::{Preprocessing, Split, Table};
use crate::metrics::Metrics;
use crate::model::{Body, Model};
use crate::nn::{self, Architecture, Batches};
use crate::spec::{DecisionTree, JobSpec, ModelSpec, Task};
use crate::tensors::TensorFile;
use crate::trace::Trace;
use crate::tree::{self, Samples, Tree};

/// What a run submits (`result.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Hex SHA-256 of `model.safetensors`.
    pub model_sha256: String,
    /// Hex SHA-256 of `model.onnx`.
    pub onnx_sha256: String,
    /// Hex SHA-256 of the data file.
    pub data_sha256: String,
    /// Hex SHA-256 of the canonical spec.
    pub spec_sha256: String,
    /// Merkle root of the checkpoint trace.
    pub trace_root: String,
    /// Segments in the trace.
    pub segments: usize,
    /// Test-split metrics.
    pub metrics: Metrics,
}

/// Progress reports of a run.
pub trait Observer {
    /// Training starts: total steps when known, steps per epoch for networks.
    fn started(&mut self, _total: Option<u64>, _per_epoch: Option<u64>) {}
    /// A step finished, with the batch loss for networks.
    fn step(&mut self, _step: u64, _loss: Option<f32>) {}
}

/// Reports nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// Time and memory limits, checked between steps.
struct Budget {
    start: Instant,
    max_seconds: u64,
    max_memory_mb: u64,
    /// When the resident set was last read; reading /proc on every step would put file I/O on
    /// the training loop.
    memory_checked: std::cell::Cell<Option<Instant>>,
}

impl Budget {
    fn new(spec: &JobSpec) -> Budget {
        Budget {
            start: Instant::now(),
            max_seconds: spec.limits.max_seconds,
            max_memory_mb: spec.limits.max_memory_mb,
            memory_checked: std::cell::Cell::new(None),
        }
    }

    fn check(&self, step: u64) -> Result<(), TrainError> {
        let elapsed = self.start.elapsed().as_secs_f64();
        if elapsed > self.max_seconds as f64 {
            return Err(TrainError::Limit(format!(
                "time limit of {} s exceeded after {step} step(s) ({elapsed:.1} s)",
                self.max_seconds
            )));
        }
        let due = self
            .memory_checked
            .get()
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(100));
        if !due {
            return Ok(());
        }
        self.memory_checked.set(Some(Instant::now()));
        if let Some(rss) = resident_mb()
            && rss > self.max_memory_mb
        {
            return Err(TrainError::Limit(format!(
                "memory limit of {} MiB exceeded after {step} step(s) (resident {rss} MiB)",
                self.max_memory_mb
            )));
        }
        Ok(())
    }

    fn admit(&self, bytes: u64, what: &str) -> Result<(), TrainError> {
        let mb = bytes.div_ceil(1 << 20);
        if mb > self.max_memory_mb {
            return Err(TrainError::Limit(format!(
                "memory limit of {} MiB is below the {mb} MiB {what} needs",
                self.max_memory_mb
            )));
        }
        Ok(())
    }
}

fn resident_mb() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096 / (1 << 20))
}

/// The data of a job, read, split and encoded.
pub struct Prepared {
    /// The table.
    pub table: Table,
    /// The split.
    pub split: Split,
    /// Fitted preprocessing.
    pub preprocessing: Preprocessing,
    /// Encoded training inputs (standardised for networks, raw for trees).
    pub x: Vec<f32>,
    /// Training targets (class index or value).
    pub y: Vec<f32>,
    /// Hex SHA-256 of the data file.
    pub data_sha256: String,
}

impl Prepared {
    /// Reads and encodes `data` for `spec`.
    pub fn new(spec: &JobSpec, data: &Path) -> Result<Prepared, TrainError> {
        let bytes = std::fs::read(data).map_err(|e| TrainError::io(data, e))?;
        // The hash is computed while the file is parsed: a validator pays for both on every
        // verification.
        let (data_sha256, table) = std::thread::scope(|s| {
            let hash = s.spawn(|| hex::encode(Sha256::digest(&bytes)));
            let table = Table::parse(data, &bytes, &spec.schema, false);
            let hash = hash
                .join()
                .map_err(|_| TrainError::Internal("the data hashing thread panicked".into()));
            (hash, table)
        });
        let (data_sha256, table) = (data_sha256?, table?);
        drop(bytes);
        let split = Split::new(table.rows(), spec.test_fraction, spec.seed)?;
        let task = spec.task();
        let preprocessing = Preprocessing::fit(&table, &spec.schema, &split.train, task)?;
        let standardise = !matches!(spec.model, ModelSpec::DecisionTree(_));
        let x = preprocessing.encode(&table, &split.train, standardise);
        let y: Vec<f32> = match task {
            Task::Classification => preprocessing
                .class_indices(&table, &split.train)
                .into_iter()
                .map(|c| c.unwrap_or(0) as f32)
                .collect(),
            Task::Regression => {
                let t = table.numeric_target(&spec.schema)?;
                let (mean, std) = if standardise {
                    preprocessing.target_scale()
                } else {
                    (0.0, 1.0)
                };
                split
                    .train
                    .iter()
                    .map(|&r| ((t[r] - mean) / std) as f32)
                    .collect()
            }
        };
        Ok(Prepared {
            table,
            split,
            preprocessing,
            x,
            y,
            data_sha256,
        })
    }
}

/// A run's evolving state: a network's parameters and optimizer, or a tree so far.
pub enum RunState {
    /// Network state.
    Net(nn::State),
    /// Tree and expansions done.
    Tree(Tree, u64),
}

/// Advances a job's state, one algorithm or the other.
pub struct Engine<'a> {
    spec: &'a JobSpec,
    kind: EngineKind<'a>,
}

enum EngineKind<'a> {
    Net {
        arch: Architecture,
        batches: Batches<'a>,
        total: u64,
    },
    Tree {
        samples: Samples<'a>,
        limits: tree::Limits,
    },
}

impl<'a> Engine<'a> {
    /// The engine for `spec` over prepared data.
    pub fn new(spec: &'a JobSpec, p: &'a Prepared) -> Result<Engine<'a>, TrainError> {
        let width = p.preprocessing.width();
        let classes = p.preprocessing.classes.len();
        let kind = match &spec.model {
            ModelSpec::DecisionTree(DecisionTree {
                max_depth,
                min_samples_split,
                min_samples_leaf,
                ..
            }) => EngineKind::Tree {
                samples: Samples {
                    x: &p.x,
                    y: &p.y,
                    width,
                    classes,
                },
                limits: tree::Limits {
                    criterion: spec.criterion().unwrap_or(crate::spec::Criterion::Gini),
                    max_depth: *max_depth,
                    min_samples_split: *min_samples_split,
                    min_samples_leaf: *min_samples_leaf,
                },
            },
            _ => {
                let arch = Architecture::new(spec, width, classes)
                    .ok_or_else(|| TrainError::Internal("no network for this spec".into()))?;
                let batches = Batches::new(&p.x, &p.y, width, spec.training.batch_size, spec.seed);
                let total = spec.training.epochs * batches.per_epoch();
                EngineKind::Net {
                    arch,
                    batches,
                    total,
                }
            }
        };
        Ok(Engine { spec, kind })
    }

    /// Total steps, when known in advance (networks).
    pub fn total(&self) -> Option<u64> {
        match &self.kind {
            EngineKind::Net { total, .. } => Some(*total),
            EngineKind::Tree { .. } => None,
        }
    }

    /// The initial state.
    pub fn init(&self) -> Result<RunState, TrainError> {
        Ok(match &self.kind {
            EngineKind::Net { arch, .. } => RunState::Net(nn::State::init(arch, self.spec.seed)?),
            EngineKind::Tree { samples, .. } => RunState::Tree(Tree::root(samples), 0),
        })
    }

    /// Whether the run is complete in this state.
    pub fn done(&self, state: &RunState) -> bool {
        match (&self.kind, state) {
            (EngineKind::Net { total, .. }, RunState::Net(s)) => s.step >= *total,
            (_, RunState::Tree(t, _)) => t.done(),
            _ => true,
        }
    }

    /// Runs up to `steps` steps, calling `each` after every one.
    pub fn advance(
        &mut self,
        state: &mut RunState,
        steps: u64,
        each: &mut dyn FnMut(u64, Option<f32>) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        let optimizer = &self.spec.training.optimizer;
        match (&mut self.kind, state) {
            (
                EngineKind::Net {
                    arch,
                    batches,
                    total,
                },
                RunState::Net(s),
            ) => {
                let end = (s.step + steps).min(*total);
                while s.step < end {
                    let loss = nn::step(arch, optimizer, s, batches)?;
                    if !loss.is_finite() {
                        return Err(TrainError::Diverged { step: s.step });
                    }
                    each(s.step, Some(loss))?;
                }
            }
            (EngineKind::Tree { samples, limits }, RunState::Tree(t, done)) => {
                // One expansion per call keeps the limit checks between expansions.
                for _ in 0..steps {
                    if t.grow(samples, limits, 1) == 0 {
                        break;
                    }
                    *done += 1;
                    each(*done, None)?;
                }
            }
            _ => return Err(TrainError::Internal("state does not fit the engine".into())),
        }
        Ok(())
    }

    /// The checkpoint file of a state.
    pub fn checkpoint(&self, state: &RunState) -> Result<TensorFile, TrainError> {
        Ok(match state {
            RunState::Net(s) => s.to_file()?,
            RunState::Tree(t, done) => t.to_file(*done),
        })
    }

    /// Restores a checkpoint (any malformation is [`TrainError::CorruptCheckpoint`]).
    pub fn restore(&self, index: usize, bytes: &[u8]) -> Result<RunState, TrainError> {
        let corrupt = |reason: String| TrainError::CorruptCheckpoint { index, reason };
        let f = TensorFile::from_bytes(bytes).map_err(|e| corrupt(e.to_string()))?;
        Ok(match &self.kind {
            EngineKind::Net { arch, .. } => {
                RunState::Net(nn::State::from_file(&f, arch).map_err(|e| corrupt(e.to_string()))?)
            }
            EngineKind::Tree { samples, .. } => {
                let (t, done) =
                    Tree::from_file(&f, samples.width).map_err(|e| corrupt(e.to_string()))?;
                RunState::Tree(t, done)
            }
        })
    }

    /// Steps taken in a state.
    pub fn steps(state: &RunState) -> u64 {
        match state {
            RunState::Net(s) => s.step,
            RunState::Tree(_, done) => *done,
        }
    }

    /// The model a finished state is.
    pub fn model(
        &self,
        state: RunState,
        preprocessing: &Preprocessing,
    ) -> Result<Model, TrainError> {
        let body = match (&self.kind, state) {
            (EngineKind::Net { arch, .. }, RunState::Net(s)) => Body::Net {
                arch: arch.clone(),
                params: s.params,
            },
            (EngineKind::Tree { .. }, RunState::Tree(t, _)) => Body::Tree(t),
            _ => return Err(TrainError::Internal("state does not fit the engine".into())),
        };
        Ok(Model {
            spec: self.spec.clone(),
            preprocessing: preprocessing.clone(),
            body,
        })
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn checkpoint_path(out: &Path, i: usize) -> PathBuf {
    out.join("checkpoints").join(format!("{i:05}.ckpt"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    std::fs::write(path, bytes).map_err(|e| TrainError::io(path, e))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| TrainError::Internal(e.to_string()))?;
    write(path, format!("{text}\n").as_bytes())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Result(format!("{}: {e}", path.display())))
}

/// The files a run writes at the top of its output directory (see the module doc); checkpoints
/// go under `checkpoints/`.
const OUTPUT_FILES: [&str; 6] = [
    "model.safetensors",
    "model.onnx",
    "metrics.json",
    "trace.json",
    "split.json",
    "result.json",
];

/// The files of an earlier run in `out` that [`run`] would overwrite or delete, in a fixed order;
/// empty when `out` does not exist or holds none of them.
pub fn earlier_outputs(out: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = OUTPUT_FILES
        .iter()
        .map(|name| out.join(name))
        .filter(|path| path.exists())
        .collect();
    if let Ok(entries) = std::fs::read_dir(out.join("checkpoints")) {
        let mut checkpoints: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        checkpoints.sort();
        found.extend(checkpoints);
    }
    found
}

/// Refuses an output directory holding an earlier run's files ([`TrainError::OutputExists`]), so
/// a run does not silently replace results.
pub fn check_output_dir(out: &Path) -> Result<(), TrainError> {
    let earlier = earlier_outputs(out);
    match earlier.first() {
        None => Ok(()),
        Some(first) => Err(TrainError::OutputExists {
            first: first.display().to_string(),
            others: earlier.len() - 1,
        }),
    }
}

/// Trains `spec` on `data`, writing everything to `out` and replacing an earlier run's files
/// there (the CLI calls [`check_output_dir`] first unless given `--force`).
pub fn run(
    spec: &JobSpec,
    data: &Path,
    out: &Path,
    observer: &mut dyn Observer,
) -> Result<RunResult, TrainError> {
    if out.exists() && !out.is_dir() {
        return Err(TrainError::io(
            out,
            std::io::Error::other("exists and is not a directory"),
        ));
    }
    // A result left by an earlier run in this directory must not outlive a failing rerun, nor
    // checkpoints beyond this run's count.
    for stale in [out.join("result.json"), out.join("trace.json")] {
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(TrainError::io(&stale, e));
            }
            _ => {}
        }
    }
    if let Ok(entries) = std::fs::read_dir(out.join("checkpoints")) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let budget = Budget::new(spec);
    let size = std::fs::metadata(data)
        .map_err(|e| TrainError::io(data, e))?
        .len();
    // Parsed cells take about twice the text, the encoded copy about as much again.
    budget.admit(size.saturating_mul(3), "the data")?;
    let prepared = Prepared::new(spec, data)?;
    budget.check(0)?;
    std::fs::create_dir_all(out.join("checkpoints")).map_err(|e| TrainError::io(out, e))?;
    let mut engine = Engine::new(spec, &prepared)?;
    observer.started(
        engine.total(),
        match &engine.kind {
            EngineKind::Net { batches, .. } => Some(batches.per_epoch()),
            EngineKind::Tree { .. } => None,
        },
    );
    let mut state = engine.init()?;
    let mut steps = Vec::new();
    let mut leaves = Vec::new();
    loop {
        let bytes = engine.checkpoint(&state)?.to_bytes();
        write(&checkpoint_path(out, leaves.len()), &bytes)?;
        steps.push(Engine::steps(&state));
        leaves.push(Sha256::digest(&bytes).into());
        if engine.done(&state) {
            break;
        }
        engine.advance(&mut state, spec.checkpoint_every, &mut |step, loss| {
            observer.step(step, loss);
            budget.check(step)
        })?;
    }
    let trace = Trace::new(spec.checkpoint_every, steps, leaves);
    let model = engine.model(state, &prepared.preprocessing)?;
    let model_bytes = model.to_bytes()?;
    let onnx = crate::onnx::export(&model)?;
    let predictions = model.predict(&prepared.table, &prepared.split.test)?;
    let metrics = model.metrics(&predictions, &prepared.table, &prepared.split.test)?;
    write(&out.join("model.safetensors"), &model_bytes)?;
    write(&out.join("model.onnx"), &onnx)?;
    write_json(&out.join("metrics.json"), &metrics)?;
    write_json(&out.join("trace.json"), &trace)?;
    write_json(&out.join("split.json"), &prepared.split)?;
    let result = RunResult {
        model_sha256: sha256_hex(&model_bytes),
        onnx_sha256: sha256_hex(&onnx),
        data_sha256: prepared.data_sha256.clone(),
        spec_sha256: sha256_hex(spec.canonical_json().as_bytes()),
        trace_root: trace.root.clone(),
        segments: trace.segments(),
        metrics,
    };
    write_json(&out.join("result.json"), &result)?;
    Ok(result)
}

/// One verified segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentCheck {
    /// Segment index (checkpoint i to i+1).
    pub segment: usize,
    /// Steps re-run.
    pub steps: u64,
    /// Whether the last segment also reproduced the model file.
    pub final_model_checked: bool,
    /// SHA-256 of the end checkpoint as re-computed (equal to the trace's leaf `segment + 1`).
    #[serde(serialize_with = "hex_digest")]
    pub end_sha256: [u8; 32],
}

fn hex_digest<S: serde::Serializer>(digest: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(digest))
}

/// Re-runs `segments` of the run in `out` against `data`: the result, trace and model must agree
/// with each other, the trace must start at the checkpoint the spec's seed gives and have its
/// checkpoints at the steps the spec implies ([`Trace::schedule_error`]), the final checkpoint
/// must hash to the last leaf, be a finished run and be the submitted model,
/// each starting checkpoint must hash to its leaf, re-running from it must give the next leaf (and,
/// for the last segment, the submitted model file), and the end checkpoint's file, when present,
/// must hash to that leaf too.
pub fn verify(
    out: &Path,
    data: &Path,
    segments: &[usize],
) -> Result<Vec<SegmentCheck>, TrainError> {
    let result: RunResult = read_json(&out.join("result.json"))?;
    let trace: Trace = read_json(&out.join("trace.json"))?;
    if !trace.consistent() || trace.root != result.trace_root || trace.segments() != result.segments
    {
        return Err(TrainError::Result(
            "trace.json does not match its own root or the result's trace_root".into(),
        ));
    }
    let model_path = out.join("model.safetensors");
    let model_bytes = std::fs::read(&model_path).map_err(|e| TrainError::io(&model_path, e))?;
    if sha256_hex(&model_bytes) != result.model_sha256 {
        return Err(TrainError::Result(
            "model.safetensors does not hash to the result's model_sha256".into(),
        ));
    }
    let model = Model::from_bytes(&model_bytes)?;
    let spec = model.spec.clone();
    if sha256_hex(spec.canonical_json().as_bytes()) != result.spec_sha256 {
        return Err(TrainError::Result(
            "the model's spec is not the result's spec".into(),
        ));
    }
    let prepared = Prepared::new(&spec, data)?;
    if prepared.data_sha256 != result.data_sha256 {
        return Err(TrainError::OtherData {
            path: data.display().to_string(),
            have: prepared.data_sha256,
            want: result.data_sha256,
        });
    }
    // Checked on every verification, not only when the last segment is drawn: a model whose
    // stored standardisation differs from the data's would score other inputs than it trained on.
    if model.preprocessing != prepared.preprocessing {
        return Err(TrainError::Result(
            "the model's preprocessing is not the one fitted on the run's data and split".into(),
        ));
    }
    let mut engine = Engine::new(&spec, &prepared)?;
    // The trace must be the whole run the spec describes, from its start to its end: otherwise a
    // trainer could commit checkpoint 0 as any state it likes (forged weights one step before
    // the end, say), train honestly from there, and every re-run segment would match; or stop
    // early and submit a prefix. Checked on every verification with no training: checkpoint 0
    // is rebuilt from the spec's seed exactly as `run` writes it, and the steps must be the
    // schedule `run` follows (the finished end is checked on the final checkpoint below).
    let Some(&first_step) = trace.steps.first() else {
        return Err(TrainError::Result("the trace has no checkpoints".into()));
    };
    let initial = engine.checkpoint(&engine.init()?)?.to_bytes();
    if first_step != 0 || sha256_hex(&initial) != trace.leaves[0] {
        return Err(TrainError::Result(format!(
            "the trace does not start at the spec's initial checkpoint (its checkpoint 0 is at \
             step {first_step}{})",
            if first_step == 0 {
                " but is not the state the spec's seed gives"
            } else {
                ", not 0"
            }
        )));
    }
    if let Some(reason) = trace.schedule_error(spec.checkpoint_every, engine.total()) {
        return Err(TrainError::Result(reason));
    }
    // Checked on every verification, not only by the validators that draw the last segment: a
    // trainer could otherwise submit another model (an earlier, cheaper one) beside an honest
    // trace and escape whenever the last segment is not sampled. Restoring costs no training.
    let last = trace.segments();
    let final_path = checkpoint_path(out, last);
    let final_bytes = std::fs::read(&final_path).map_err(|e| TrainError::io(&final_path, e))?;
    if sha256_hex(&final_bytes) != trace.leaves[last] {
        return Err(TrainError::CorruptCheckpoint {
            index: last,
            reason: "its SHA-256 is not the trace's leaf".into(),
        });
    }
    let final_state = engine.restore(last, &final_bytes)?;
    if Engine::steps(&final_state) != trace.steps[last] {
        return Err(TrainError::CorruptCheckpoint {
            index: last,
            reason: "its step count is not the trace's".into(),
        });
    }
    if !engine.done(&final_state) {
        return Err(TrainError::Result(format!(
            "the trace ends at step {} before the run is finished: the final checkpoint ({last}) \
             is not a finished state",
            trace.steps[last]
        )));
    }
    let final_model = engine
        .model(final_state, &prepared.preprocessing)?
        .to_bytes()?;
    if sha256_hex(&final_model) != result.model_sha256 {
        return Err(TrainError::Result(format!(
            "model.safetensors is not the model of the final checkpoint ({last})"
        )));
    }
    let mut checks = Vec::new();
    for &i in segments {
        if i >= trace.segments() {
            return Err(TrainError::Result(format!(
                "segment {i} does not exist; the trace has {} (0..{})",
                trace.segments(),
                trace.segments()
            )));
        }
        let path = checkpoint_path(out, i);
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        if sha256_hex(&bytes) != trace.leaves[i] {
            return Err(TrainError::CorruptCheckpoint {
                index: i,
                reason: "its SHA-256 is not the trace's leaf".into(),
            });
        }
        let mut state = engine.restore(i, &bytes)?;
        if Engine::steps(&state) != trace.steps[i] {
            return Err(TrainError::CorruptCheckpoint {
                index: i,
                reason: "its step count is not the trace's".into(),
            });
        }
        let want = trace.steps[i + 1] - trace.steps[i];
        engine.advance(&mut state, want, &mut |_, _| Ok(()))?;
        let end: [u8; 32] = Sha256::digest(engine.checkpoint(&state)?.to_bytes()).into();
        let got = hex::encode(end);
        if got != trace.leaves[i + 1] {
            return Err(TrainError::TraceMismatch {
                segment: i,
                expected: trace.leaves[i + 1].clone(),
                got,
            });
        }
        // The re-run already proves the leaf; a published end checkpoint that differs from it
        // means the run's checkpoint files are not its trace (the next segment's re-runners
        // would start from it). An absent file is not needed here.
        let end_path = checkpoint_path(out, i + 1);
        match std::fs::read(&end_path) {
            Ok(bytes) if sha256_hex(&bytes) != got => {
                return Err(TrainError::CorruptCheckpoint {
                    index: i + 1,
                    reason: "its SHA-256 is not the trace's leaf".into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TrainError::io(&end_path, e)),
        }
        let last = i + 1 == trace.segments();
        if last {
            let again = engine.model(state, &prepared.preprocessing)?.to_bytes()?;
            if sha256_hex(&again) != result.model_sha256 {
                return Err(TrainError::Result(
                    "the final checkpoint does not give the submitted model".into(),
                ));
            }
        }
        checks.push(SegmentCheck {
            segment: i,
            steps: want,
            final_model_checked: last,
            end_sha256: end,
        });
    }
    Ok(checks)
}

/// What a validator reports after re-running its segments (`trainer verify --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Segments re-run (or drawn, when the check stopped before re-running them).
    pub segments: Vec<usize>,
    /// Whether every check of [`verify`] passed.
    pub matches: bool,
    /// Hex SHA-256 over the re-computed end-checkpoint digests of `segments`, in segment order
    /// (the concatenation of their 32 bytes); `None` unless `matches`.
    pub segments_digest: Option<String>,
    /// Hex SHA-256 of `model.safetensors` as found.
    pub model_sha256: String,
    /// The root in `trace.json`; `None` when that file is not a trace.
    pub trace_root: Option<String>,
    /// Why the run does not match; `None` when it does.
    pub error: Option<String>,
}

/// [`verify`] as a verdict: a finding against the run ([`TrainError::is_mismatch`]) is
/// `matches: false` with its reason; only a failure to check at all (a missing file, the wrong
/// data file, an internal error) is an `Err`.
pub fn verdict(out: &Path, data: &Path, segments: &[usize]) -> Result<Verdict, TrainError> {
    let model_path = out.join("model.safetensors");
    let model_bytes = std::fs::read(&model_path).map_err(|e| TrainError::io(&model_path, e))?;
    let trace_root = match read_trace(out) {
        Ok(trace) => Some(trace.root),
        Err(e) if e.is_mismatch() => None,
        Err(e) => return Err(e),
    };
    let mut verdict = Verdict {
        segments: segments.to_vec(),
        matches: false,
        segments_digest: None,
        model_sha256: sha256_hex(&model_bytes),
        trace_root,
        error: None,
    };
    match verify(out, data, segments) {
        Ok(checks) => {
            let mut digest = Sha256::new();
            for check in &checks {
                digest.update(check.end_sha256);
            }
            verdict.segments = checks.iter().map(|c| c.segment).collect();
            verdict.matches = true;
            verdict.segments_digest = Some(hex::encode(digest.finalize()));
        }
        Err(e) if e.is_mismatch() => verdict.error = Some(e.to_string()),
        Err(e) => return Err(e),
    }
    Ok(verdict)
}

/// The trace of a run directory (for choosing segments).
pub fn read_trace(out: &Path) -> Result<Trace, TrainError> {
    read_json(&out.join("trace.json"))
}
