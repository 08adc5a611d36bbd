//! The ONNX export round trip: a model with fuzzed parameters is written as a model file, read
//! back (`Model::from_bytes`), exported (`onnx::export`), loaded and run with tract
//! (`onnx::evaluate`), and compared with the native model's predictions, as `trainer eval`
//! compares them.
//!
//! Input: a model selector (the five fixtures of `fixtures/models`: MLP with a logistic and a
//! softmax output, linear regression, tree classifier and regressor), a row count (1..=6), then
//! bytes for every f32 parameter in file order (a network's weights, a tree's thresholds and
//! leaf values; each a signed byte / 64 or, for thresholds, / 8), for each numeric column's
//! standardisation (mean: signed byte / 8, std: a power of two), and for the rows' cells (a
//! number: signed byte / 8, or for trees one of the thresholds; a category: one the model knows
//! or an unseen one). Values are dyadic so both sides compute the first layer exactly.
//! Properties: no panic; the fuzzed model file reads back; the export is deterministic; ONNX
//! gives as many values as the native model, equal for trees and within the trainer's own
//! tolerance (1e-5, scaled by max(1, |native|)) for networks.

#![no_main]

use libfuzzer_sys::fuzz_target;
use neurodata_fuzz as fx;
use neurodata_trainer::data::{Encoding, Table, Values};
use neurodata_trainer::model::{Body, Model, Predictions};
use neurodata_trainer::onnx;
use neurodata_trainer::tensors::Data;

fn flat(p: &Predictions) -> Vec<f64> {
    match p {
        Predictions::Classes(c) => c.iter().flatten().copied().collect(),
        Predictions::Values(v) => v.clone(),
    }
}

fuzz_target!(init: fx::seed_mode("onnx_roundtrip", fx::seeds::onnx_roundtrip), |data: &[u8]| {
    let mut c = fx::Cursor::new(data);
    let (name, _, _) = fx::MODELS[usize::from(c.u8()) % fx::MODELS.len()];
    let rows = 1 + usize::from(c.u8() % 6);
    let base = Model::from_bytes(fx::model_bytes(name)).expect("fixture model reads");
    let mut file = base.to_file().expect("fixture model writes");
    let mut thresholds = Vec::new();
    for (tensor, entry) in file.tensors.iter_mut() {
        if let Data::F32(values) = &mut entry.data {
            let scale = if tensor == "tree.threshold" { 8.0 } else { 64.0 };
            for v in values.iter_mut() {
                *v = f32::from(c.i8()) / scale;
            }
            if tensor == "tree.threshold" {
                thresholds.clone_from(values);
            }
        }
    }
    let mut model = Model::from_bytes(&file.to_bytes()).expect("a model with other parameters reads");
    let tree = matches!(model.body, Body::Tree(_));
    for e in &mut model.preprocessing.features {
        if let Encoding::Numeric { mean, std, .. } = e {
            *mean = f64::from(c.i8()) / 8.0;
            *std = f64::powi(2.0, i32::from(c.u8() % 5) - 2);
        }
    }
    let mut features = Vec::new();
    for e in &model.preprocessing.features {
        features.push(match e {
            Encoding::Numeric { .. } => Values::Num(
                (0..rows)
                    .map(|_| {
                        let pick = c.u8();
                        if tree && pick % 3 == 0 && !thresholds.is_empty() {
                            f64::from(thresholds[usize::from(c.u8()) % thresholds.len()])
                        } else {
                            f64::from(c.i8()) / 8.0
                        }
                    })
                    .collect(),
            ),
            Encoding::OneHot { categories, .. } => Values::Cat(
                (0..rows)
                    .map(|_| {
                        categories
                            .get(usize::from(c.u8()) % (categories.len() + 1))
                            .cloned()
                            .unwrap_or_else(|| "unseen".into())
                    })
                    .collect(),
            ),
        });
    }
    let table = Table {
        features,
        target: vec![String::new(); rows],
    };
    let all: Vec<usize> = (0..rows).collect();

    let bytes = onnx::export(&model).expect("export");
    assert_eq!(onnx::export(&model).ok().as_ref(), Some(&bytes), "export is deterministic");
    let native = model.predict(&table, &all).expect("native prediction");
    let raw = model.preprocessing.encode(&table, &all, false);
    let classification = !model.preprocessing.classes.is_empty();
    let width = model.preprocessing.width();
    let exported = onnx::evaluate(&bytes, &raw, rows, width, classification)
        .unwrap_or_else(|e| panic!("tract cannot run the export: {e}"));
    let (a, b) = (flat(&native), flat(&exported));
    assert_eq!(a.len(), b.len(), "ONNX gives another number of values");
    let tolerance = if tree { 0.0 } else { 1e-5 };
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let diff = (x - y).abs() / x.abs().max(1.0);
        assert!(
            diff <= tolerance,
            "{name}: value {i}: native {x}, ONNX {y} (scaled difference {diff:e}); input {raw:?}"
        );
    }
});
