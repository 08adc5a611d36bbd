//! ONNX export of every model type and evaluation with tract-onnx.
//!
//! Networks become `Sub`/`Div` (the standardisation), `MatMul`/`Add` per layer, `Relu`/`Tanh`,
//! and `Sigmoid` or `Softmax` (opset 13). Trees become `ai.onnx.ml` `TreeEnsembleClassifier`
//! (class probabilities as leaf weights, so the arg-max is the native prediction) or
//! `TreeEnsembleRegressor`. Every graph takes one input, `features`: `[N, width]` float, the
//! one-hot encoded but not standardised columns (`Preprocessing::encode(.., false)`); the last
//! output is `probabilities` `[N, classes]` or `prediction` `[N, 1]`.

use prost_onnx::Message as _;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::TrainError;
use crate::model::{Body, Model, Predictions};
use crate::nn::Output;
use crate::spec::Activation;
use crate::tree::{LEAF, Tree};

const INPUT: &str = "features";

fn float_tensor(name: &str, dims: &[usize], values: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_owned(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: values,
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        name: outputs.first().map_or(String::new(), |o| format!("{o}.op")),
        op_type: op.to_owned(),
        input: inputs.iter().map(|s| (*s).to_owned()).collect(),
        output: outputs.iter().map(|s| (*s).to_owned()).collect(),
        attribute: attributes,
        ..Default::default()
    }
}

/// The node in the `ai.onnx.ml` domain.
fn in_ml_domain(mut node: pb::NodeProto) -> pb::NodeProto {
    node.domain = "ai.onnx.ml".into();
    node
}

use pb::attribute_proto::AttributeType;

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}
fn attr_ints(name: &str, ints: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints,
        ..Default::default()
    }
}
fn attr_floats(name: &str, floats: Vec<f32>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Floats as i32,
        floats,
        ..Default::default()
    }
}
fn attr_string(name: &str, s: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}
fn attr_strings(name: &str, strings: Vec<String>) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Strings as i32,
        strings: strings.into_iter().map(String::into_bytes).collect(),
        ..Default::default()
    }
}

fn value_info(
    name: &str,
    elem: pb::tensor_proto::DataType,
    dims: &[Option<usize>],
) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(n) => Value::DimValue(*n as i64),
                                None => Value::DimParam("N".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ONNX bytes of a model (deterministic: same model, same bytes).
pub fn export(model: &Model) -> Result<Vec<u8>, TrainError> {
    use pb::tensor_proto::DataType;
    let width = model.preprocessing.width();
    let mut nodes = Vec::new();
    let mut init = Vec::new();
    let mut outputs = Vec::new();
    let mut ml = false;
    match &model.body {
        Body::Net { arch, params } => {
            let mut mean = Vec::new();
            let mut std = Vec::new();
            for e in &model.preprocessing.features {
                match e {
                    crate::data::Encoding::Numeric {
                        mean: m, std: s, ..
                    } => {
                        mean.push(*m as f32);
                        std.push(*s as f32);
                    }
                    crate::data::Encoding::OneHot { categories, .. } => {
                        mean.extend(std::iter::repeat_n(0.0, categories.len()));
                        std.extend(std::iter::repeat_n(1.0, categories.len()));
                    }
                }
            }
            init.push(float_tensor("mean", &[width], mean));
            init.push(float_tensor("std", &[width], std));
            nodes.push(node("Sub", &[INPUT, "mean"], &["centred"], vec![]));
            nodes.push(node("Div", &["centred", "std"], &["h0"], vec![]));
            let mut h = "h0".to_owned();
            let last = arch.layers.len() - 1;
            for (l, &(i, o)) in arch.layers.iter().enumerate() {
                for (name, dims) in [
                    (format!("l{l}.weight"), vec![i, o]),
                    (format!("l{l}.bias"), vec![o]),
                ] {
                    let t = params
                        .get(&name)
                        .ok_or_else(|| TrainError::Internal(format!("no parameter {name}")))?
                        .as_tensor()
                        .flatten_all()?
                        .to_vec1::<f32>()?;
                    init.push(float_tensor(&name, &dims, t));
                }
                let (mm, z) = (format!("l{l}.matmul"), format!("l{l}.z"));
                nodes.push(node(
                    "MatMul",
                    &[&h, &format!("l{l}.weight")],
                    &[&mm],
                    vec![],
                ));
                nodes.push(node("Add", &[&mm, &format!("l{l}.bias")], &[&z], vec![]));
                h = z;
                if l < last {
                    let a = format!("l{l}.act");
                    let op = match arch.activation {
                        Activation::Relu => "Relu",
                        Activation::Tanh => "Tanh",
                    };
                    nodes.push(node(op, &[&h], &[&a], vec![]));
                    h = a;
                }
            }
            match arch.output {
                Output::Identity => {
                    let (mean, std) = model.preprocessing.target_scale();
                    init.push(float_tensor("target_std", &[1], vec![std as f32]));
                    init.push(float_tensor("target_mean", &[1], vec![mean as f32]));
                    nodes.push(node("Mul", &[&h, "target_std"], &["scaled"], vec![]));
                    nodes.push(node(
                        "Add",
                        &["scaled", "target_mean"],
                        &["prediction"],
                        vec![],
                    ));
                    outputs.push(value_info("prediction", DataType::Float, &[None, Some(1)]));
                }
                Output::Logistic => {
                    init.push(float_tensor("one", &[1], vec![1.0]));
                    nodes.push(node("Sigmoid", &[&h], &["p1"], vec![]));
                    nodes.push(node("Sub", &["one", "p1"], &["p0"], vec![]));
                    nodes.push(node(
                        "Concat",
                        &["p0", "p1"],
                        &["probabilities"],
                        vec![attr_int("axis", 1)],
                    ));
                    outputs.push(value_info(
                        "probabilities",
                        DataType::Float,
                        &[None, Some(2)],
                    ));
                }
                Output::Softmax => {
                    let c = arch.layers[last].1;
                    nodes.push(node(
                        "Softmax",
                        &[&h],
                        &["probabilities"],
                        vec![attr_int("axis", 1)],
                    ));
                    outputs.push(value_info(
                        "probabilities",
                        DataType::Float,
                        &[None, Some(c)],
                    ));
                }
            }
        }
        Body::Tree(tree) => {
            ml = true;
            let classes = model.preprocessing.classes.len();
            let (modes, ids) = tree_nodes(tree);
            let n = tree.len();
            let mut attrs = vec![
                attr_ints("nodes_treeids", vec![0; n]),
                attr_ints("nodes_nodeids", ids.clone()),
                attr_ints(
                    "nodes_featureids",
                    tree.feature.iter().map(|&f| i64::from(f.max(0))).collect(),
                ),
                attr_strings("nodes_modes", modes),
                attr_floats(
                    "nodes_values",
                    (0..n)
                        .map(|i| {
                            if tree.feature[i] >= 0 {
                                tree.threshold[i]
                            } else {
                                0.0
                            }
                        })
                        .collect(),
                ),
                attr_ints(
                    "nodes_truenodeids",
                    (0..n).map(|i| i64::from(tree.left[i].max(0))).collect(),
                ),
                attr_ints(
                    "nodes_falsenodeids",
                    (0..n).map(|i| i64::from(tree.right[i].max(0))).collect(),
                ),
                attr_string("post_transform", "NONE"),
            ];
            let leaves: Vec<usize> = (0..n).filter(|&i| tree.feature[i] == LEAF).collect();
            let per = tree.outputs;
            let leaf_ids: Vec<i64> = leaves
                .iter()
                .flat_map(|&i| std::iter::repeat_n(i as i64, per))
                .collect();
            let weights: Vec<f32> = leaves
                .iter()
                .flat_map(|&i| tree.value[i * per..(i + 1) * per].to_vec())
                .collect();
            let outs: Vec<i64> = leaves.iter().flat_map(|_| 0..per as i64).collect();
            if classes > 0 {
                attrs.extend([
                    attr_ints("class_treeids", vec![0; leaf_ids.len()]),
                    attr_ints("class_nodeids", leaf_ids),
                    attr_ints("class_ids", outs),
                    attr_floats("class_weights", weights),
                    attr_ints("classlabels_int64s", (0..classes as i64).collect()),
                ]);
                nodes.push(in_ml_domain(node(
                    "TreeEnsembleClassifier",
                    &[INPUT],
                    &["label", "probabilities"],
                    attrs,
                )));
                outputs.push(value_info("label", DataType::Int64, &[None]));
                outputs.push(value_info(
                    "probabilities",
                    DataType::Float,
                    &[None, Some(classes)],
                ));
            } else {
                attrs.extend([
                    attr_int("n_targets", 1),
                    attr_string("aggregate_function", "SUM"),
                    attr_ints("target_treeids", vec![0; leaf_ids.len()]),
                    attr_ints("target_nodeids", leaf_ids),
                    attr_ints("target_ids", outs),
                    attr_floats("target_weights", weights),
                ]);
                nodes.push(in_ml_domain(node(
                    "TreeEnsembleRegressor",
                    &[INPUT],
                    &["prediction"],
                    attrs,
                )));
                outputs.push(value_info("prediction", DataType::Float, &[None, Some(1)]));
            }
        }
    }
    let mut opset_import = vec![pb::OperatorSetIdProto {
        domain: String::new(),
        version: 13,
    }];
    if ml {
        opset_import.push(pb::OperatorSetIdProto {
            domain: "ai.onnx.ml".into(),
            version: 3,
        });
    }
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import,
        producer_name: "neurodata-trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(pb::GraphProto {
            name: "neurodata".into(),
            node: nodes,
            initializer: init,
            input: vec![value_info(INPUT, DataType::Float, &[None, Some(width)])],
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

fn tree_nodes(tree: &Tree) -> (Vec<String>, Vec<i64>) {
    let modes = tree
        .feature
        .iter()
        .map(|&f| if f >= 0 { "BRANCH_LEQ" } else { "LEAF" }.to_owned())
        .collect();
    (modes, (0..tree.len() as i64).collect())
}

/// Runs ONNX bytes on raw encoded inputs `[rows, width]` with tract and returns the model's
/// predictions in the native form.
pub fn evaluate(
    onnx: &[u8],
    x: &[f32],
    rows: usize,
    width: usize,
    classification: bool,
) -> Result<Predictions, TrainError> {
    let fail = |e: anyhow::Error| TrainError::Onnx(format!("{e:#}"));
    let mut framework = tract_onnx::onnx();
    crate::onnx_regressor::register(&mut framework);
    let model = framework
        .model_for_read(&mut &*onnx)
        .and_then(|m| m.with_input_fact(0, f32::fact([rows, width]).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(fail)?;
    let input = tract_ndarray::Array2::from_shape_vec((rows, width), x.to_vec())
        .map_err(|e| TrainError::Onnx(e.to_string()))?;
    let outputs = model.run(tvec!(Tensor::from(input).into())).map_err(fail)?;
    let last = outputs
        .last()
        .ok_or_else(|| TrainError::Onnx("the model has no output".into()))?;
    let view = last.to_plain_array_view::<f32>().map_err(fail)?;
    let values: Vec<f64> = view.iter().map(|&v| f64::from(v)).collect();
    Ok(if classification {
        let c = view.shape().get(1).copied().unwrap_or(1).max(1);
        Predictions::Classes(values.chunks(c).map(<[f64]>::to_vec).collect())
    } else {
        Predictions::Values(values)
    })
}
