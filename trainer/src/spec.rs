//! The job spec: what to train, on which columns, with which hyper-parameters and limits.
//!
//! A spec is JSON with unknown fields refused, so a typo fails the job instead of silently
//! training with a default. [`JobSpec::check`] is the stateless check of every range; the model
//! file embeds the checked spec in its canonical form.

use serde::{Deserialize, Serialize};

pub use crate::data::Task;
use crate::data::{Schema, SchemaError};

/// Why a spec was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not JSON, or not the shape of a spec.
    #[error("job spec: {0}")]
    Parse(#[from] serde_json::Error),
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
    Schema(#[from] SchemaError),
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

/// The algorithm, tagged by `algorithm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// Binary (sigmoid) or multinomial (softmax) logistic regression, by the number of classes.
    LogisticRegression {
        /// L2 penalty on the weights.
        #[serde(default)]
        l2: f64,
    },
    /// Least-squares linear regression.
    LinearRegression {
        /// L2 penalty on the weights.
        #[serde(default)]
        l2: f64,
    },
    /// Multi-layer perceptron with one or two hidden layers.
    Mlp {
        /// Classification or regression.
        task: Task,
        /// Widths of the hidden layers.
        hidden: Vec<usize>,
        /// Hidden non-linearity.
        #[serde(default = "default_activation")]
        activation: Activation,
        /// Dropout probability after each hidden layer, in training only.
        #[serde(default)]
        dropout: f64,
        /// L2 penalty on the weights.
        #[serde(default)]
        l2: f64,
    },
    /// CART decision tree.
    DecisionTree {
        /// Classification or regression.
        task: Task,
        /// Split criterion; gini by default for classification, mse for regression.
        #[serde(default)]
        criterion: Option<Criterion>,
        /// Deepest level a split may create (the root is depth 0).
        #[serde(default = "default_max_depth")]
        max_depth: u32,
        /// Fewest samples a node needs to be split.
        #[serde(default = "default_min_split")]
        min_samples_split: usize,
        /// Fewest samples each child of a split must keep.
        #[serde(default = "default_min_leaf")]
        min_samples_leaf: usize,
    },
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

/// Optimizer of the gradient-trained models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Optimizer {
    /// Stochastic gradient descent with optional momentum.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum (0 disables it).
        #[serde(default)]
        momentum: f64,
    },
    /// Adam (Kingma & Ba) with bias correction.
    Adam {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Second-moment decay.
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Denominator guard.
        #[serde(default = "default_eps")]
        eps: f64,
    },
}

impl Optimizer {
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } => *lr,
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
            optimizer: Optimizer::Adam {
                lr: 0.01,
                beta1: default_beta1(),
                beta2: default_beta2(),
                eps: default_eps(),
            },
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
        let spec: JobSpec = serde_json::from_str(text)?;
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
            ModelSpec::LogisticRegression { .. } => Task::Classification,
            ModelSpec::LinearRegression { .. } => Task::Regression,
            ModelSpec::Mlp { task, .. } | ModelSpec::DecisionTree { task, .. } => *task,
        }
    }

    /// The tree criterion, defaulted by task.
    pub fn criterion(&self) -> Option<Criterion> {
        match &self.model {
            ModelSpec::DecisionTree {
                criterion, task, ..
            } => Some(criterion.unwrap_or(match task {
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
            ModelSpec::LogisticRegression { l2 } | ModelSpec::LinearRegression { l2 } => Some(*l2),
            ModelSpec::Mlp {
                hidden,
                dropout,
                l2,
                ..
            } => {
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
            ModelSpec::DecisionTree {
                task,
                criterion,
                max_depth,
                min_samples_split,
                min_samples_leaf,
            } => {
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
                Optimizer::Sgd { momentum, .. } => {
                    range(
                        momentum.is_finite() && (0.0..1.0).contains(momentum),
                        "training.optimizer.momentum",
                        momentum,
                        "0 <= x < 1",
                    )?;
                }
                Optimizer::Adam {
                    beta1, beta2, eps, ..
                } => {
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
        self.schema.check()?;
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
}
