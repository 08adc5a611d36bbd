//! The safetensors model reader: `TensorFile::from_bytes` (the canonical tensor file behind
//! model files and checkpoints) and `Model::from_bytes`.
//!
//! Input: the file bytes. Properties: no panic; an accepted tensor file is canonical (its
//! re-encoding is the input) and every tensor's element count is its shape's product; an
//! accepted model file re-encodes to a model file that reads back and re-encodes to the same
//! bytes, and predicts a row of zeros with one output per class (or one value) without
//! panicking; its ONNX export is deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use neurodata_fuzz as fx;
use neurodata_trainer::model::{Model, Predictions};
use neurodata_trainer::tensors::{Data, TensorFile};

fuzz_target!(init: fx::seed_mode("safetensors", fx::seeds::safetensors), |data: &[u8]| {
    let Ok(file) = TensorFile::from_bytes(data) else {
        return;
    };
    assert_eq!(file.to_bytes(), data, "an accepted tensor file is canonical");
    for (name, e) in &file.tensors {
        let len = match &e.data {
            Data::F32(v) => v.len(),
            Data::I32(v) => v.len(),
        };
        assert_eq!(Some(len), e.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)), "{name}");
    }
    let Ok(model) = Model::from_bytes(data) else {
        return;
    };
    let bytes = model.to_bytes().expect("a model that was read writes");
    let again = Model::from_bytes(&bytes).expect("a written model reads back");
    assert_eq!(again.to_bytes().ok(), Some(bytes), "writing a read model is a fixed point");
    let width = model.preprocessing.width();
    if width <= 4096 {
        let outputs = match model.predict_encoded(&vec![0.0; width], 1) {
            Ok(Predictions::Classes(c)) => c.iter().map(Vec::len).sum(),
            Ok(Predictions::Values(v)) => v.len(),
            Err(_) => return,
        };
        let classes = model.preprocessing.classes.len();
        if matches!(model.body, neurodata_trainer::model::Body::Net { .. }) {
            assert_eq!(outputs, classes.max(1), "one output per class, or one value");
        }
    }
    if let Ok(onnx) = neurodata_trainer::onnx::export(&model) {
        assert_eq!(neurodata_trainer::onnx::export(&model).ok(), Some(onnx), "export is deterministic");
    }
});
