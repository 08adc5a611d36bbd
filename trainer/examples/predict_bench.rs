//! In-process figures of `scripts/bench/predict.sh`: prediction with the trainer's `Predictor`
//! and bare tract on the same rows, and the CPU of a leaderboard score against the trainer's own
//! eval of the same split. Prints one JSON object on its last line.
//!
//! ```text
//! predict_bench --model model.safetensors --onnx model.onnx --rows rows.csv [--batch 1000]
//!               [--split split.csv] [--seconds 3]
//! ```
//!
//! - `predictor_rows_per_s`: CSV batches of `--batch` rows (header in each, as a `Predict`
//!   message carries them) through `Predictor::predict`: read, schema checks, encoding, tract.
//! - `tract_rows_per_s`: the same rows already encoded, through the predictor's plans
//!   (`Predictor::outputs`; batches of one size run on a plan for that size): tract alone.
//! - `tract_symbolic_rows_per_s` and `tract_concrete_rows_per_s`: tract alone on a plan with a
//!   symbolic batch dimension and on one for exactly `--batch` rows, each planned once, and
//!   `replan_rows_per_s`: a plan made per batch (`onnx::evaluate`); with the planning times.
//! - `score_cpu_s` / `native_cpu_s` / `score_cpu_ratio`: process CPU (user + system) of
//!   `score::score` (the ONNX export under tract) and `score::native` (the trainer's model) on
//!   `--split`, each repeated until it has used a second of CPU.
//! - `predictions_sha256`: SHA-256 of the labels of one pass over every batch, one per line
//!   (`gateway/examples/predict_client.rs` prints the gateway's).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use neurodata_trainer::data::Table;
use neurodata_trainer::model::Model;
use neurodata_trainer::predict::{Format, Predictor};
use neurodata_trainer::{onnx, score};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// Rows per second of `f` run over `batches` batches of `rows` rows, repeated for `seconds`.
fn rate(
    seconds: f64,
    rows: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut done = 0usize;
    while done == 0 || start.elapsed() < Duration::from_secs_f64(seconds) {
        f()?;
        done += rows;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// CPU seconds per call of `f`, repeated until it has used `min_cpu` seconds.
fn cpu_per_call(min_cpu: f64, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = cpu_seconds()?;
    let mut calls = 0u32;
    while calls == 0 || cpu_seconds()? - start < min_cpu {
        f()?;
        calls += 1;
    }
    Ok((cpu_seconds()? - start) / f64::from(calls))
}

fn main() -> anyhow::Result<()> {
    let model_path = PathBuf::from(arg("--model").context("--model FILE")?);
    let onnx_path = PathBuf::from(arg("--onnx").context("--onnx FILE")?);
    let rows_path = PathBuf::from(arg("--rows").context("--rows CSV")?);
    let batch: usize = arg("--batch").unwrap_or("1000".into()).parse()?;
    let seconds: f64 = arg("--seconds").unwrap_or("3".into()).parse()?;
    let model_bytes = std::fs::read(&model_path)?;
    let onnx_bytes = std::fs::read(&onnx_path)?;
    let model = Model::from_bytes(&model_bytes)?;
    let width = model.preprocessing.width();
    let classification = !model.preprocessing.classes.is_empty();

    // Batches of `batch` rows, each with the header line, as a client sends them.
    let text = std::fs::read_to_string(&rows_path)?;
    let mut lines = text.lines();
    let header = lines.next().context("empty rows file")?;
    let body: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    if body.len() < batch {
        bail!(
            "{} holds {} rows, fewer than one batch",
            rows_path.display(),
            body.len()
        );
    }
    let batches: Vec<String> = body
        .chunks(batch)
        .filter(|c| c.len() == batch)
        .map(|c| format!("{header}\n{}\n", c.join("\n")))
        .collect();
    let encoded: Vec<Vec<f32>> = batches
        .iter()
        .map(|b| {
            let t = Table::parse(Path::new("b.csv"), b.as_bytes(), &model.spec.schema, true)?;
            let all: Vec<usize> = (0..t.rows()).collect();
            Ok(model.preprocessing.encode(&t, &all, false))
        })
        .collect::<anyhow::Result<_>>()?;

    let predictor = Predictor::load(&model_bytes, &onnx_bytes)?;
    // The heart MLP has no tree ensemble: the stock ONNX operators plan it.
    let framework = tract_onnx::onnx();
    let t = Instant::now();
    let inference = framework.model_for_read(&mut &*onnx_bytes)?;
    let n = inference.symbols.sym("N");
    let symbolic = inference
        .with_input_fact(0, f32::fact(&[TDim::from(n), width.to_dim()]).into())?
        .into_optimized()?
        .into_runnable()?;
    let plan_ms_symbolic = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let concrete = framework
        .model_for_read(&mut &*onnx_bytes)?
        .with_input_fact(0, f32::fact([batch, width]).into())?
        .into_optimized()?
        .into_runnable()?;
    let plan_ms_concrete = t.elapsed().as_secs_f64() * 1000.0;

    // The labels of one pass over every batch, for the check against the gateway's.
    let mut labels = String::new();
    for b in &batches {
        for l in predictor.predict(b.as_bytes(), Format::Csv)?.predictions {
            labels.push_str(&l);
            labels.push('\n');
        }
    }
    let predictions_sha256 = hex::encode(Sha256::digest(labels.as_bytes()));

    let mut i = 0usize;
    let mut next = || {
        i = (i + 1) % batches.len();
        i
    };
    let predictor_rows_per_s = rate(seconds, batch, || {
        let k = next();
        let p = predictor.predict(batches[k].as_bytes(), Format::Csv)?;
        anyhow::ensure!(p.predictions.len() == batch);
        Ok(())
    })?;
    let tract_rows_per_s = rate(seconds, batch, || {
        predictor.outputs(&encoded[next()], batch)?;
        Ok(())
    })?;
    let tract_symbolic_rows_per_s = rate(seconds, batch, || {
        let x = Tensor::from_shape(&[batch, width], &encoded[next()])?;
        symbolic.run(tvec!(x.into()))?;
        Ok(())
    })?;
    let tract_concrete_rows_per_s = rate(seconds, batch, || {
        let x = Tensor::from_shape(&[batch, width], &encoded[next()])?;
        concrete.run(tvec!(x.into()))?;
        Ok(())
    })?;
    let replan_rows_per_s = rate(seconds, batch, || {
        onnx::evaluate(&onnx_bytes, &encoded[next()], batch, width, classification)?;
        Ok(())
    })?;
    // The symbolic plan gives what the concrete one gives.
    let x = Tensor::from_shape(&[batch, width], &encoded[0])?;
    let concrete_out: Vec<f32> = concrete.run(tvec!(x.into()))?[0]
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect();
    let x = Tensor::from_shape(&[batch, width], &encoded[0])?;
    let symbolic_out: Vec<f32> = symbolic.run(tvec!(x.into()))?[0]
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect();
    let max_plan_diff = concrete_out
        .iter()
        .zip(&symbolic_out)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);

    let mut out = serde_json::json!({
        "batch_rows": batch,
        "predictor_rows_per_s": predictor_rows_per_s.round(),
        "tract_rows_per_s": tract_rows_per_s.round(),
        "tract_symbolic_rows_per_s": tract_symbolic_rows_per_s.round(),
        "tract_concrete_rows_per_s": tract_concrete_rows_per_s.round(),
        "replan_rows_per_s": replan_rows_per_s.round(),
        "plan_ms_symbolic": (plan_ms_symbolic * 10.0).round() / 10.0,
        "plan_ms_concrete": (plan_ms_concrete * 10.0).round() / 10.0,
        "symbolic_vs_concrete_max_diff": max_plan_diff,
        "predictions_sha256": predictions_sha256,
    });
    eprintln!(
        "in-process, batches of {batch}: Predictor {predictor_rows_per_s:.0} rows/s; tract \
         alone {tract_rows_per_s:.0} rows/s (the Predictor's plans), \
         {tract_symbolic_rows_per_s:.0} (symbolic plan), {tract_concrete_rows_per_s:.0} \
         (concrete plan), {replan_rows_per_s:.0} (planned per batch); planning \
         {plan_ms_symbolic:.1} ms symbolic, {plan_ms_concrete:.1} ms concrete; outputs differ \
         by at most {max_plan_diff}"
    );

    if let Some(split) = arg("--split").map(PathBuf::from) {
        let bytes = std::fs::read(&split)?;
        let s = score::score(&model, &onnx_bytes, &split, &bytes)?;
        let n = score::native(&model, &split, &bytes)?;
        let score_cpu = cpu_per_call(1.0, || {
            score::score(&model, &onnx_bytes, &split, &bytes)?;
            Ok(())
        })?;
        let native_cpu = cpu_per_call(1.0, || {
            score::native(&model, &split, &bytes)?;
            Ok(())
        })?;
        eprintln!(
            "score on {} rows: {} ({score_cpu:.3} s CPU); the trainer's own eval: {} \
             ({native_cpu:.3} s CPU)",
            s.rows, s.json, n.json
        );
        out["split_rows"] = s.rows.into();
        out["score_json"] = s.json.into();
        out["native_json"] = n.json.into();
        out["score_cpu_s"] = ((score_cpu * 1000.0).round() / 1000.0).into();
        out["native_cpu_s"] = ((native_cpu * 1000.0).round() / 1000.0).into();
        out["score_cpu_ratio"] = ((score_cpu / native_cpu * 1000.0).round() / 1000.0).into();
    }
    println!("{out}");
    Ok(())
}
