//! The job spec: what to train, on which columns, with which hyper-parameters and limits.
//!
//! A spec is JSON with unknown fields refused, so a typo fails the job instead of silently
//! training with a default; inside `model` and `training.optimizer` the typo is reported at its
//! line and column, by its path (`model.hiden`; the `tagged` module says how).
//! [`JobSpec::check`] is the stateless check of every range; the model file embeds the checked
//! spec in its canonical form.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

pub use crate::data::Task;
use crate::data::{Schema, SchemaError};
use crate::tagged::{self, Tagged};

/// Why a spec was refused.
///
/// Each message is whole, cause included, and no variant has a `source()`: a printer that walks
/// the chain (`{:#}`, anyhow's `Caused by:`) would print the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not JSON, or not the shape of a spec; serde_json's message ends with the line and column.
    #[error("job spec: {0}")]
    Parse(serde_json::Error),
    /// A hyper-parameter outside its range.
    #[error("job spec: {field} = {value} is out of range: {rule}")]
    OutOfRange {
        /// Dotted path of the field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The accepted range.
        rule: &'static str,
    },
    /// The schema is inconsistent (e.g. the target is not one of its columns).
    #[error("job spec: schema: {0}")]
    Schema(SchemaError),
    /// The algorithm cannot do the task asked of it.
    #[error("job spec: {0}")]
    Unsupported(String),
}

/// A training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Columns of the data and the target.
    pub schema: Schema,
    /// Algorithm and its hyper-parameters.
    pub model: ModelSpec,
    /// Seeds the split, initialisation, shuffling and dropout.
    pub seed: u64,
    /// Share of rows held out for the test split.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Epochs, batches and optimizer (ignored by trees).
    #[serde(default)]
    pub training: TrainingSpec,
    /// Steps between checkpoints of the trace (optimizer steps, or node expansions for trees).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Resource limits of the job.
    #[serde(default)]
    pub limits: Limits,
}

fn default_test_fraction() -> f64 {
    0.2
}
fn default_checkpoint_every() -> u64 {
    50
}

/// Hidden-layer non-linearity of the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// tanh(x), computed with the libm crate
    Tanh,
}

/// Split criterion of a decision tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// Gini impurity (classification).
    Gini,
    /// Shannon entropy (classification).
    Entropy,
    /// Mean squared error (regression).
    Mse,
}

/// The algorithm, tagged by `algorithm`; each variant's fields are its struct.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "algorithm", rename_all = "snake_case")]
pub enum ModelSpec {
    /// Binary (sigmoid) or multinomial (softmax) logistic regression, by the number of classes.
    LogisticRegression(LinearModel),
    /// Least-squares linear regression.
    LinearRegression(LinearModel),
    /// Multi-layer perceptron with one or two hidden layers.
    Mlp(Mlp),
    /// CART decision tree.
    DecisionTree(DecisionTree),
}

impl<'de> Deserialize<'de> for ModelSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        tagged::deserialize(d)
    }
}

impl Tagged for ModelSpec {
    const PATH: &'static str = "model";
    const TAG: &'static str = "algorithm";
    const VARIANTS: &'static [&'static str] = &[
        "logistic_regression",
        "linear_regression",
        "mlp",
        "decision_tree",
    ];

    fn variant<'de, D: Deserializer<'de>>(name: &str, fields: D) -> Result<Self, D::Error> {
        Ok(match name {
            "logistic_regression" => {
                ModelSpec::LogisticRegression(LinearModel::deserialize(fields)?)
            }
            "linear_regression" => ModelSpec::LinearRegression(LinearModel::deserialize(fields)?),
            "mlp" => ModelSpec::Mlp(Mlp::deserialize(fields)?),
            "decision_tree" => ModelSpec::DecisionTree(DecisionTree::deserialize(fields)?),
            _ => return Err(de::Error::unknown_variant(name, Self::VARIANTS)),
        })
    }
}

/// Logistic or linear regression: one linear layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearModel {
    /// L2 penalty on the weights.
    #[serde(default)]
    pub l2: f64,
}

/// Multi-layer perceptron.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mlp {
    /// Classification or regression.
    pub task: Task,
    /// Widths of the hidden layers.
    pub hidden: Vec<usize>,
    /// Hidden non-linearity.
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// Dropout probability after each hidden layer, in training only.
    #[serde(default)]
    pub dropout: f64,
    /// L2 penalty on the weights.
    #[serde(default)]
    pub l2: f64,
}

/// CART decision tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionTree {
    /// Classification or regression.
    pub task: Task,
    /// Split criterion; gini by default for classification, mse for regression.
    #[serde(default)]
    pub criterion: Option<Criterion>,
    /// Deepest level a split may create (the root is depth 0).
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
    /// Fewest samples a node needs to be split.
    #[serde(default = "default_min_split")]
    pub min_samples_split: usize,
    /// Fewest samples each child of a split must keep.
    #[serde(default = "default_min_leaf")]
    pub min_samples_leaf: usize,
}

fn default_activation() -> Activation {
    Activation::Relu
}
fn default_max_depth() -> u32 {
    8
}
fn default_min_split() -> usize {
    2
}
fn default_min_leaf() -> usize {
    1
}

/// Optimizer of the gradient-trained models, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    /// Stochastic gradient descent with optional momentum.
    Sgd(Sgd),
    /// Adam (Kingma & Ba) with bias correction.
    Adam(Adam),
}

impl<'de> Deserialize<'de> for Optimizer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        tagged::deserialize(d)
    }
}

impl Tagged for Optimizer {
    const PATH: &'static str = "training.optimizer";
    const TAG: &'static str = "kind";
    const VARIANTS: &'static [&'static str] = &["sgd", "adam"];

    fn variant<'de, D: Deserializer<'de>>(name: &str, fields: D) -> Result<Self, D::Error> {
        Ok(match name {
            "sgd" => Optimizer::Sgd(Sgd::deserialize(fields)?),
            "adam" => Optimizer::Adam(Adam::deserialize(fields)?),
            _ => return Err(de::Error::unknown_variant(name, Self::VARIANTS)),
        })
    }
}

/// Stochastic gradient descent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f64,
    /// Momentum (0 disables it).
    #[serde(default)]
    pub momentum: f64,
}

/// Adam.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adam {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Second-moment decay.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Denominator guard.
    #[serde(default = "default_eps")]
    pub eps: f64,
}

impl Optimizer {
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Sgd(Sgd { lr, .. }) | Optimizer::Adam(Adam { lr, .. }) => *lr,
        }
    }
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

/// Epochs, batch size and optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    /// Passes over the training split.
    pub epochs: u64,
    /// Rows per optimizer step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// The optimizer.
    pub optimizer: Optimizer,
}

impl Default for TrainingSpec {
    fn default() -> Self {
        TrainingSpec {
            epochs: 20,
            batch_size: 32,
            optimizer: Optimizer::Adam(Adam {
                lr: 0.01,
                beta1: default_beta1(),
                beta2: default_beta2(),
                eps: default_eps(),
            }),
        }
    }
}

/// Resource limits; a job over one stops with [`crate::TrainError::Limit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock seconds for the whole job.
    pub max_seconds: u64,
    /// Resident memory of the process, in MiB.
    pub max_memory_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_seconds: 3600,
            max_memory_mb: 4096,
        }
    }
}

impl JobSpec {
    /// Parses and checks a spec.
    pub fn from_json(text: &str) -> Result<JobSpec, SpecError> {
        let spec: JobSpec = serde_json::from_str(text).map_err(SpecError::Parse)?;
        spec.check()?;
        Ok(spec)
    }

    /// The canonical JSON embedded in the model file (field order fixed by the types).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The task this spec trains for.
    pub fn task(&self) -> Task {
        match &self.model {
            ModelSpec::LogisticRegression(_) => Task::Classification,
            ModelSpec::LinearRegression(_) => Task::Regression,
            ModelSpec::Mlp(Mlp { task, .. })
            | ModelSpec::DecisionTree(DecisionTree { task, .. }) => *task,
        }
    }

    /// The tree criterion, defaulted by task.
    pub fn criterion(&self) -> Option<Criterion> {
        match &self.model {
            ModelSpec::DecisionTree(DecisionTree {
                criterion, task, ..
            }) => Some(criterion.unwrap_or(match task {
                Task::Classification => Criterion::Gini,
                Task::Regression => Criterion::Mse,
            })),
            _ => None,
        }
    }

    /// Stateless range checks of every hyper-parameter.
    pub fn check(&self) -> Result<(), SpecError> {
        fn range(
            ok: bool,
            field: &'static str,
            value: impl ToString,
            rule: &'static str,
        ) -> Result<(), SpecError> {
            if ok {
                Ok(())
            } else {
                Err(SpecError::OutOfRange {
                    field,
                    value: value.to_string(),
                    rule,
                })
            }
        }
        let f = self.test_fraction;
        range(
            f.is_finite() && f > 0.0 && f < 1.0,
            "test_fraction",
            f,
            "0 < x < 1",
        )?;
        range(
            (1..=1_000_000).contains(&self.checkpoint_every),
            "checkpoint_every",
            self.checkpoint_every,
            "1..=1000000",
        )?;
        range(
            self.limits.max_seconds >= 1,
            "limits.max_seconds",
            self.limits.max_seconds,
            ">= 1",
        )?;
        range(
            self.limits.max_memory_mb >= 16,
            "limits.max_memory_mb",
            self.limits.max_memory_mb,
            ">= 16",
        )?;
        let l2 = match &self.model {
            ModelSpec::LogisticRegression(LinearModel { l2 })
            | ModelSpec::LinearRegression(LinearModel { l2 }) => Some(*l2),
            ModelSpec::Mlp(Mlp {
                hidden,
                dropout,
                l2,
                ..
            }) => {
                range(
                    (1..=2).contains(&hidden.len()),
                    "model.hidden",
                    format!("{hidden:?}"),
                    "one or two layers",
                )?;
                for &h in hidden {
                    range(
                        (1..=4096).contains(&h),
                        "model.hidden",
                        h,
                        "each width 1..=4096",
                    )?;
                }
                range(
                    dropout.is_finite() && (0.0..0.95).contains(dropout),
                    "model.dropout",
                    dropout,
                    "0 <= x < 0.95",
                )?;
                Some(*l2)
            }
            ModelSpec::DecisionTree(DecisionTree {
                task,
                criterion,
                max_depth,
                min_samples_split,
                min_samples_leaf,
            }) => {
                range(
                    (1..=64).contains(max_depth),
                    "model.max_depth",
                    max_depth,
                    "1..=64",
                )?;
                range(
                    *min_samples_split >= 2,
                    "model.min_samples_split",
                    min_samples_split,
                    ">= 2",
                )?;
                range(
                    *min_samples_leaf >= 1,
                    "model.min_samples_leaf",
                    min_samples_leaf,
                    ">= 1",
                )?;
                match (task, criterion) {
                    (Task::Classification, Some(Criterion::Mse)) => {
                        return Err(SpecError::Unsupported(
                            "criterion mse is for regression trees; use gini or entropy".into(),
                        ));
                    }
                    (Task::Regression, Some(Criterion::Gini | Criterion::Entropy)) => {
                        return Err(SpecError::Unsupported(
                            "gini and entropy are for classification trees; use mse".into(),
                        ));
                    }
                    _ => {}
                }
                None
            }
        };
        if let Some(l2) = l2 {
            range(l2.is_finite() && l2 >= 0.0, "model.l2", l2, "x >= 0")?;
            let t = &self.training;
            range(
                (1..=100_000).contains(&t.epochs),
                "training.epochs",
                t.epochs,
                "1..=100000",
            )?;
            range(
                (1..=1 << 20).contains(&t.batch_size),
                "training.batch_size",
                t.batch_size,
                "1..=1048576",
            )?;
            let lr = t.optimizer.lr();
            range(
                lr.is_finite() && lr > 0.0 && lr <= 10.0,
                "training.optimizer.lr",
                lr,
                "0 < x <= 10",
            )?;
            match &t.optimizer {
                Optimizer::Sgd(Sgd { momentum, .. }) => {
                    range(
                        momentum.is_finite() && (0.0..1.0).contains(momentum),
                        "training.optimizer.momentum",
                        momentum,
                        "0 <= x < 1",
                    )?;
                }
                Optimizer::Adam(Adam {
                    beta1, beta2, eps, ..
                }) => {
                    range(
                        beta1.is_finite() && (0.0..1.0).contains(beta1),
                        "training.optimizer.beta1",
                        beta1,
                        "0 <= x < 1",
                    )?;
                    range(
                        beta2.is_finite() && (0.0..1.0).contains(beta2),
                        "training.optimizer.beta2",
                        beta2,
                        "0 <= x < 1",
                    )?;
                    range(
                        eps.is_finite() && *eps > 0.0,
                        "training.optimizer.eps",
                        eps,
                        "x > 0",
                    )?;
                }
            }
        }
        self.schema.check().map_err(SpecError::Schema)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(model: &str) -> String {
        format!(
            r#"{{"schema":{{"columns":[{{"name":"a","type":"numeric"}},{{"name":"y","type":"categorical"}}],"target":"y"}},
               "model":{model},"seed":1}}"#
        )
    }

    #[test]
    fn defaults_fill_in_and_the_canonical_form_round_trips() {
        let s = JobSpec::from_json(&spec(r#"{"algorithm":"logistic_regression"}"#))
            .expect("valid spec");
        assert_eq!(s.training.epochs, 20);
        let again = JobSpec::from_json(&s.canonical_json()).expect("canonical parses");
        assert_eq!(again, s);
        assert_eq!(again.canonical_json(), s.canonical_json());
    }

    #[test]
    fn out_of_range_and_unknown_fields_are_refused_by_name() {
        let bad = [
            (
                r#"{"algorithm":"mlp","task":"classification","hidden":[]}"#,
                "model.hidden",
            ),
            (
                r#"{"algorithm":"mlp","task":"classification","hidden":[4],"dropout":1.5}"#,
                "model.dropout",
            ),
            (
                r#"{"algorithm":"decision_tree","task":"classification","max_depth":0}"#,
                "model.max_depth",
            ),
            (
                r#"{"algorithm":"decision_tree","task":"regression","criterion":"gini"}"#,
                "use mse",
            ),
            (r#"{"algorithm":"logistic_regression","l2":-1}"#, "model.l2"),
            (r#"{"algorithm":"logistic_regression","depth":3}"#, "depth"),
            (r#"{"algorithm":"svm"}"#, "svm"),
        ];
        for (model, want) in bad {
            let err = JobSpec::from_json(&spec(model))
                .expect_err(model)
                .to_string();
            assert!(err.contains(want), "{model}: {err}");
        }
        let lr0 = spec(r#"{"algorithm":"logistic_regression"}"#).replace(
            r#""seed":1"#,
            r#""seed":1,"training":{"epochs":1,"batch_size":8,"optimizer":{"kind":"sgd","lr":0}}"#,
        );
        let err = JobSpec::from_json(&lr0).expect_err("lr 0").to_string();
        assert!(err.contains("training.optimizer.lr"), "{err}");
    }

    /// The (line, column) serde_json reports for the end of the first `needle` in `text`.
    fn position_after(text: &str, needle: &str) -> (usize, usize) {
        let at = text.find(needle).expect("needle") + needle.len();
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        (text[..at].matches('\n').count() + 1, at - line_start)
    }

    #[test]
    fn a_field_inside_a_tagged_object_is_refused_at_the_field_by_its_path() {
        let cases = [
            (
                "{\n  \"algorithm\": \"mlp\",\n  \"task\": \"classification\",\n  \"hiden\": [8]\n}",
                "\"hiden\"",
                "model.hiden: unknown field for algorithm `mlp`, expected one of `task`, \
                 `hidden`, `activation`, `dropout`, `l2`",
            ),
            // Before the tag, a name no algorithm takes is still refused where it is.
            (
                "{\n  \"task\": \"classification\",\n  \"hiden\": [8],\n  \"algorithm\": \"mlp\"\n}",
                "\"hiden\"",
                "model.hiden: unknown field, expected `algorithm` or one of",
            ),
            (
                // serde_json has read past the closing brace when the error surfaces.
                "{\"algorithm\": \"svm\"}",
                "\"svm\"}",
                "model.algorithm: unknown algorithm `svm`, expected one of `logistic_regression`",
            ),
        ];
        for (model, at, want) in cases {
            let text = spec(model);
            let err = JobSpec::from_json(&text).expect_err(model).to_string();
            let (line, column) = position_after(&text, at);
            let want = format!("job spec: {want}");
            assert!(err.starts_with(&want), "{model}:\n{err}\nwant {want}");
            assert!(
                err.ends_with(&format!(" at line {line} column {column}")),
                "{model}: {err}, want line {line} column {column}"
            );
        }

        let text = spec(r#"{"algorithm":"logistic_regression"}"#).replace(
            r#""seed":1"#,
            "\"seed\":1,\n\"training\":{\"epochs\":1,\"batch_size\":8,\n\"optimizer\":{\"kind\":\"sgd\",\"lr\":0.1,\n\"momentm\":0.9}}",
        );
        let err = JobSpec::from_json(&text).expect_err("momentm").to_string();
        let (line, column) = position_after(&text, "\"momentm\"");
        assert_eq!(
            err,
            format!(
                "job spec: training.optimizer.momentm: unknown field for kind `sgd`, expected one \
                 of `lr`, `momentum` at line {line} column {column}"
            )
        );
    }

    #[test]
    fn every_tagged_variant_round_trips_with_its_tag_first() {
        let models = [
            ModelSpec::LogisticRegression(LinearModel { l2: 0.5 }),
            ModelSpec::LinearRegression(LinearModel { l2: 0.0 }),
            ModelSpec::Mlp(Mlp {
                task: Task::Regression,
                hidden: vec![4, 2],
                activation: Activation::Tanh,
                dropout: 0.1,
                l2: 0.0,
            }),
            ModelSpec::DecisionTree(DecisionTree {
                task: Task::Classification,
                criterion: Some(Criterion::Entropy),
                max_depth: 3,
                min_samples_split: 4,
                min_samples_leaf: 2,
            }),
        ];
        assert_eq!(models.len(), ModelSpec::VARIANTS.len());
        for (model, name) in models.iter().zip(ModelSpec::VARIANTS) {
            let json = serde_json::to_string(model).expect("serializes");
            assert!(
                json.starts_with(&format!(r#"{{"algorithm":"{name}","#)),
                "{json}"
            );
            let back: ModelSpec = serde_json::from_str(&json).expect(&json);
            assert_eq!(&back, model);
        }
        let optimizers = [
            Optimizer::Sgd(Sgd {
                lr: 0.1,
                momentum: 0.9,
            }),
            TrainingSpec::default().optimizer,
        ];
        assert_eq!(optimizers.len(), Optimizer::VARIANTS.len());
        for (optimizer, name) in optimizers.iter().zip(Optimizer::VARIANTS) {
            let json = serde_json::to_string(optimizer).expect("serializes");
            assert!(
                json.starts_with(&format!(r#"{{"kind":"{name}","#)),
                "{json}"
            );
            let back: Optimizer = serde_json::from_str(&json).expect(&json);
            assert_eq!(&back, optimizer);
        }
        // The canonical form is the model file's identity: a change here changes every hash.
        let mlp = JobSpec::from_json(&spec(
            r#"{"hidden":[4],"task":"classification","algorithm":"mlp"}"#,
        ))
        .expect("valid");
        assert!(
            mlp.canonical_json().contains(
                r#""model":{"algorithm":"mlp","task":"classification","hidden":[4],"activation":"relu","dropout":0.0,"l2":0.0},"#
            ),
            "{}",
            mlp.canonical_json()
        );
    }
}
