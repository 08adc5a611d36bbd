//! The model file: the canonical tensor file with the spec, the preprocessing and the
//! architecture embedded, so a model file alone predicts, and its SHA-256 names the model.

use std::collections::BTreeMap;

use candle_core::Var;

use crate::TrainError;
use crate::data::{Preprocessing, Table};
use crate::kernels;
use crate::metrics;
use crate::nn::{self, Architecture, Output};
use crate::spec::JobSpec;
use crate::tensors::{FormatError, TensorFile};
use crate::tree::Tree;

/// Format tag in the metadata.
pub const FORMAT: &str = "neurodata-model/1";

/// A trained model.
pub struct Model {
    /// The spec it was trained with.
    pub spec: JobSpec,
    /// Its preprocessing.
    pub preprocessing: Preprocessing,
    /// The learnt part.
    pub body: Body,
}

/// Network or tree.
pub enum Body {
    /// A candle network.
    Net {
        /// Its shape.
        arch: Architecture,
        /// Parameters by name.
        params: BTreeMap<String, Var>,
    },
    /// A CART tree.
    Tree(Tree),
}

/// Predictions for some rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictions {
    /// Class probabilities per row, in the preprocessing's class order.
    Classes(Vec<Vec<f64>>),
    /// Predicted values.
    Values(Vec<f64>),
}

impl Predictions {
    /// Predicted label (class name or value) per row.
    pub fn labels(&self, classes: &[String]) -> Vec<String> {
        match self {
            Predictions::Classes(p) => p
                .iter()
                .map(|p| classes.get(metrics::argmax(p)).cloned().unwrap_or_default())
                .collect(),
            Predictions::Values(v) => v.iter().map(|v| v.to_string()).collect(),
        }
    }
}

impl Model {
    /// Whether inputs are standardised (networks) or raw (trees).
    pub fn standardises(&self) -> bool {
        matches!(self.body, Body::Net { .. })
    }

    /// The model file.
    pub fn to_file(&self) -> Result<TensorFile, TrainError> {
        let mut f = match &self.body {
            Body::Net { arch, params } => {
                let mut f = TensorFile::default();
                for (name, v) in params {
                    let t = v.as_tensor();
                    f.put_f32(name, t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?);
                }
                f.metadata.insert("architecture".into(), json(arch));
                f
            }
            Body::Tree(tree) => {
                let mut f = tree.to_file(0);
                f.metadata.remove("step");
                f.metadata.insert("architecture".into(), "\"tree\"".into());
                f
            }
        };
        f.metadata.insert("kind".into(), "model".into());
        f.metadata.insert("format".into(), FORMAT.into());
        f.metadata.insert("spec".into(), self.spec.canonical_json());
        f.metadata
            .insert("preprocessing".into(), json(&self.preprocessing));
        Ok(f)
    }

    /// The canonical bytes of the model file.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        Ok(self.to_file()?.to_bytes())
    }

    /// Reads a model file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, FormatError> {
        let f = TensorFile::from_bytes(bytes)?;
        if f.meta("format")? != FORMAT {
            return Err(FormatError(format!("format is not {FORMAT}")));
        }
        let spec = JobSpec::from_json(f.meta("spec")?).map_err(|e| FormatError(e.to_string()))?;
        let preprocessing: Preprocessing = serde_json::from_str(f.meta("preprocessing")?)
            .map_err(|e| FormatError(format!("preprocessing: {e}")))?;
        let architecture = f.meta("architecture")?;
        let body = if architecture == "\"tree\"" {
            let mut f = f.clone();
            f.metadata.insert("step".into(), "0".into());
            let (tree, _) = Tree::from_file(&f, preprocessing.width())?;
            if !tree.done() {
                return Err(FormatError("the tree has unexpanded nodes".into()));
            }
            Body::Tree(tree)
        } else {
            let arch: Architecture = serde_json::from_str(architecture)
                .map_err(|e| FormatError(format!("architecture: {e}")))?;
            // The output must fit the target: a logistic unit predicts two classes, softmax
            // one unit per class (at least two), identity a value (no classes). A file that
            // pairs them otherwise would predict a class list of the wrong length.
            let classes = preprocessing.classes.len();
            let fits = match arch.output {
                Output::Logistic => classes == 2,
                Output::Softmax => classes >= 2,
                Output::Identity => classes == 0,
            };
            if !fits {
                return Err(FormatError(format!(
                    "a {:?} output does not fit {classes} target classes",
                    arch.output
                )));
            }
            let outputs = match arch.output {
                Output::Softmax => classes,
                Output::Logistic | Output::Identity => 1,
            };
            let chained = arch.layers.windows(2).all(|w| w[0].1 == w[1].0);
            if arch.layers.first().map(|l| l.0) != Some(preprocessing.width())
                || arch.layers.last().map(|l| l.1) != Some(outputs)
                || !chained
            {
                return Err(FormatError(
                    "architecture does not fit the preprocessing".into(),
                ));
            }
            // The checkpoint reader checks every parameter's shape against the architecture.
            let mut check = TensorFile::default();
            check.metadata.insert("step".into(), "0".into());
            for (name, e) in &f.tensors {
                check.tensors.insert(format!("param/{name}"), e.clone());
            }
            let state = nn::State::from_file(&check, &arch)?;
            Body::Net {
                arch,
                params: state.params,
            }
        };
        Ok(Model {
            spec,
            preprocessing,
            body,
        })
    }

    /// Predictions for `rows` of `table`.
    pub fn predict(&self, table: &Table, rows: &[usize]) -> Result<Predictions, TrainError> {
        let x = self.preprocessing.encode(table, rows, self.standardises());
        self.predict_encoded(&x, rows.len())
    }

    /// Predictions for encoded inputs (`[rows, width]`, standardised for networks).
    pub fn predict_encoded(&self, x: &[f32], rows: usize) -> Result<Predictions, TrainError> {
        let width = self.preprocessing.width();
        Ok(match &self.body {
            Body::Net { arch, params } => {
                let out = nn::outputs(arch, params, x, rows)?;
                match arch.output {
                    Output::Identity => {
                        let (mean, std) = self.preprocessing.target_scale();
                        Predictions::Values(
                            out.iter().map(|&v| f64::from(v) * std + mean).collect(),
                        )
                    }
                    Output::Logistic => Predictions::Classes(
                        out.iter()
                            .map(|&z| {
                                let p = kernels::sigmoid(f64::from(z));
                                vec![1.0 - p, p]
                            })
                            .collect(),
                    ),
                    Output::Softmax => {
                        let c = arch.layers.last().map_or(1, |l| l.1);
                        Predictions::Classes(out.chunks(c).map(kernels::softmax).collect())
                    }
                }
            }
            Body::Tree(tree) => {
                let rows = x.chunks(width.max(1)).map(|r| tree.predict(r));
                if self.preprocessing.classes.is_empty() {
                    Predictions::Values(rows.map(|v| f64::from(v[0])).collect())
                } else {
                    Predictions::Classes(
                        rows.map(|v| v.iter().map(|&p| f64::from(p)).collect())
                            .collect(),
                    )
                }
            }
        })
    }

    /// Metrics of these predictions against the rows' targets.
    pub fn metrics(
        &self,
        predictions: &Predictions,
        table: &Table,
        rows: &[usize],
    ) -> Result<metrics::Metrics, TrainError> {
        Ok(match predictions {
            Predictions::Classes(p) => {
                let classes = self.preprocessing.classes.len();
                let truth: Vec<usize> = self
                    .preprocessing
                    .class_indices(table, rows)
                    .into_iter()
                    .map(|t| t.unwrap_or(classes))
                    .collect();
                if truth.iter().all(|&t| t < classes) {
                    metrics::classification(p, &truth, classes)
                } else {
                    // A label the training split never had: an extra class nothing predicts.
                    let p: Vec<Vec<f64>> = p
                        .iter()
                        .map(|q| q.iter().copied().chain([0.0]).collect())
                        .collect();
                    metrics::classification(&p, &truth, classes + 1)
                }
            }
            Predictions::Values(v) => {
                let truth = table.numeric_target(&self.spec.schema)?;
                let t: Vec<f64> = rows.iter().map(|&r| truth[r]).collect();
                metrics::regression(v, &t)
            }
        })
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `safetensors` fuzz target: a net with a logistic output whose preprocessing
    /// lists one class was read, and predicted two probabilities for it.
    #[test]
    fn an_output_that_does_not_fit_the_target_classes_is_refused() {
        let bytes = include_bytes!("../../fuzz/regressions/safetensors/logistic-output-one-class");
        let err = Model::from_bytes(bytes).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("does not fit 1 target classes")),
            "{err:?}"
        );
    }
}
