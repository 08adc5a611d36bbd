//! Training throughput of the deterministic path against candle's default path, on synthetic
//! rows, for logistic regression and an MLP; and, with `--write-csv`, the data file the
//! verification benchmark trains on.
//!
//! Both paths get the same batches in the same order and the same Adam hyper-parameters; the
//! candle path is what a candle user writes: `candle_nn::Linear` (candle's runtime-dispatched,
//! multi-threaded matmul), candle's activations and losses, `candle_nn::AdamW`.
//!
//! Usage: trainer_bench [ROWS] [FEATURES] [EPOCHS]   |   trainer_bench --write-csv PATH ROWS FEATURES

use std::io::Write as _;
use std::time::Instant;

use candle_core::{DType, Device, Module};
use candle_nn::{Optimizer as _, VarBuilder, VarMap};
use neurodata_trainer::kernels;
use neurodata_trainer::nn::{self, Architecture, Batches, Output};
use neurodata_trainer::rng::Stream;
use neurodata_trainer::spec::{Activation, Adam, Optimizer};

fn synthetic(rows: usize, features: usize) -> (Vec<f32>, Vec<f32>) {
    let mut s = Stream::new(1, "bench", 0);
    let w: Vec<f32> = (0..features).map(|_| s.unit_f32() * 2.0 - 1.0).collect();
    let mut x = Vec::with_capacity(rows * features);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let row: Vec<f32> = (0..features).map(|_| s.unit_f32() * 2.0 - 1.0).collect();
        let z: f32 = row.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() + (s.unit_f32() - 0.5);
        y.push(f32::from(u8::from(z > 0.0)));
        x.extend(row);
    }
    (x, y)
}

const BATCH: usize = 256;
const LR: f64 = 0.01;

fn deterministic(
    arch: &Architecture,
    x: &[f32],
    y: &[f32],
    width: usize,
    epochs: u64,
) -> anyhow::Result<(f64, f32)> {
    let opt = Optimizer::Adam(Adam {
        lr: LR,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    });
    let mut state = nn::State::init(arch, 1)?;
    let mut batches = Batches::new(x, y, width, BATCH, 1);
    let steps = epochs * batches.per_epoch();
    let start = Instant::now();
    let mut loss = 0.0;
    for _ in 0..steps {
        loss = nn::step(arch, &opt, &mut state, &mut batches)?;
    }
    Ok((start.elapsed().as_secs_f64(), loss))
}

fn candle_default(
    arch: &Architecture,
    x: &[f32],
    y: &[f32],
    width: usize,
    epochs: u64,
) -> anyhow::Result<(f64, f32)> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let layers: Vec<candle_nn::Linear> = arch
        .layers
        .iter()
        .enumerate()
        .map(|(l, &(i, o))| candle_nn::linear(i, o, vb.pp(format!("l{l}"))))
        .collect::<candle_core::Result<_>>()?;
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: LR,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut batches = Batches::new(x, y, width, BATCH, 1);
    let steps = epochs * batches.per_epoch();
    let start = Instant::now();
    let mut loss = 0.0;
    for step in 0..steps {
        let (xb, yb) = batches.batch(step)?;
        let mut h = xb;
        for (l, layer) in layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if l + 1 < layers.len() {
                h = h.relu()?;
            }
        }
        // The stable form, softplus(z) - y z: candle_nn's binary_cross_entropy_with_logit takes
        // log(sigmoid(z)) and turns NaN once a logit saturates.
        let z = h.flatten_all()?;
        let softplus = (z.relu()? + ((z.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
        let out = (softplus - (&yb * &z)?)?.mean_all()?;
        opt.backward_step(&out)?;
        loss = out.to_scalar::<f32>()?;
    }
    Ok((start.elapsed().as_secs_f64(), loss))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--write-csv") {
        let path = args
            .get(1)
            .ok_or_else(|| anyhow::anyhow!("--write-csv PATH ROWS FEATURES"))?;
        let rows: usize = args.get(2).map_or(Ok(100_000), |s| s.parse())?;
        let features: usize = args.get(3).map_or(Ok(50), |s| s.parse())?;
        let (x, y) = synthetic(rows, features);
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        let header: Vec<String> = (0..features).map(|i| format!("x{i}")).collect();
        writeln!(out, "{},y", header.join(","))?;
        for (row, label) in x.chunks(features).zip(&y) {
            let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            writeln!(
                out,
                "{},{}",
                cells.join(","),
                if *label > 0.5 { "p" } else { "n" }
            )?;
        }
        return Ok(());
    }
    let rows: usize = args.first().map_or(Ok(100_000), |s| s.parse())?;
    let features: usize = args.get(1).map_or(Ok(50), |s| s.parse())?;
    let epochs: u64 = args.get(2).map_or(Ok(2), |s| s.parse())?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    kernels::set_threads(threads);
    let (x, y) = synthetic(rows, features);
    let mut report = serde_json::Map::new();
    let mut ratios = Vec::new();
    let mut throughput = serde_json::Map::new();
    for (name, hidden) in [("logistic_regression", vec![]), ("mlp", vec![64, 32])] {
        let mut widths = vec![features];
        widths.extend(&hidden);
        widths.push(1);
        let arch = Architecture {
            layers: widths.windows(2).map(|w| (w[0], w[1])).collect(),
            activation: Activation::Relu,
            dropout: 0.0,
            output: Output::Logistic,
            l2: 0.0,
        };
        let samples = (rows as u64 * epochs) as f64;
        // Warm up both paths once (allocator, thread pools).
        deterministic(&arch, &x[..features * 4096], &y[..4096], features, 1)?;
        candle_default(&arch, &x[..features * 4096], &y[..4096], features, 1)?;
        let (det_s, det_loss) = deterministic(&arch, &x, &y, features, epochs)?;
        let (candle_s, candle_loss) = candle_default(&arch, &x, &y, features, epochs)?;
        let (det, candle) = (samples / det_s, samples / candle_s);
        eprintln!(
            "{name}: deterministic {det:.0} samples/s (final batch loss {det_loss:.4}), candle default {candle:.0} samples/s (loss {candle_loss:.4}), ratio {:.3}",
            det / candle
        );
        report.insert(
            format!("{name}_deterministic_samples_per_s"),
            (det.round()).into(),
        );
        report.insert(
            format!("{name}_candle_samples_per_s"),
            (candle.round()).into(),
        );
        report.insert(
            format!("{name}_ratio"),
            ((det / candle * 1000.0).round() / 1000.0).into(),
        );
        throughput.insert(name.into(), det.round().into());
        ratios.push(det / candle);
    }
    report.insert("threads".into(), threads.into());
    report.insert("rows".into(), rows.into());
    report.insert("features".into(), features.into());
    report.insert("epochs".into(), epochs.into());
    let worst = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    report.insert(
        "ratio_vs_candle".into(),
        ((worst * 1000.0).round() / 1000.0).into(),
    );
    report.insert("samples_per_s".into(), throughput.into());
    println!("{}", serde_json::Value::Object(report));
    Ok(())
}
