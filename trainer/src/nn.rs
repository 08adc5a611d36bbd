//! Gradient-trained models on candle: logistic and linear regression are one-layer networks, the
//! MLP has one or two hidden layers. Parameters are candle `Var`s kept in a map sorted by name;
//! forward and backward run through [`crate::kernels`]; SGD and Adam are ours so their state is
//! part of a checkpoint.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};

use crate::kernels::{self, Loss};
use crate::rng::Stream;
use crate::spec::{Activation, Adam, JobSpec, LinearModel, Mlp, ModelSpec, Optimizer, Sgd, Task};
use crate::tensors::{FormatError, TensorFile};

/// Shape of a network.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Architecture {
    /// `(inputs, outputs)` of each layer.
    pub layers: Vec<(usize, usize)>,
    /// Hidden non-linearity.
    pub activation: Activation,
    /// Dropout after each hidden layer (training only).
    pub dropout: f64,
    /// How outputs become a loss and predictions.
    pub output: Output,
    /// L2 penalty on weights.
    pub l2: f64,
}

/// The output layer's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// One logit, P(class 1) = sigmoid.
    Logistic,
    /// One logit per class, softmax.
    Softmax,
    /// The predicted value.
    Identity,
}

impl Output {
    fn loss(self) -> Loss {
        match self {
            Output::Logistic => Loss::Logistic,
            Output::Softmax => Loss::Softmax,
            Output::Identity => Loss::Squared,
        }
    }
}

impl Architecture {
    /// The network a spec asks for, given the input width and the number of classes.
    pub fn new(spec: &JobSpec, inputs: usize, classes: usize) -> Option<Architecture> {
        let output = match spec.task() {
            Task::Regression => Output::Identity,
            Task::Classification if classes == 2 => Output::Logistic,
            Task::Classification => Output::Softmax,
        };
        let outputs = if output == Output::Softmax {
            classes
        } else {
            1
        };
        let (hidden, activation, dropout, l2) = match &spec.model {
            ModelSpec::LogisticRegression(LinearModel { l2 })
            | ModelSpec::LinearRegression(LinearModel { l2 }) => {
                (Vec::new(), Activation::Relu, 0.0, *l2)
            }
            ModelSpec::Mlp(Mlp {
                hidden,
                activation,
                dropout,
                l2,
                ..
            }) => (hidden.clone(), *activation, *dropout, *l2),
            ModelSpec::DecisionTree(_) => return None,
        };
        let mut widths = vec![inputs];
        widths.extend(hidden);
        widths.push(outputs);
        Some(Architecture {
            layers: widths.windows(2).map(|w| (w[0], w[1])).collect(),
            activation,
            dropout,
            output,
            l2,
        })
    }

    /// Parameters, optimizer state excluded.
    pub fn parameter_count(&self) -> usize {
        self.layers.iter().map(|(i, o)| i * o + o).sum()
    }
}

fn weight(l: usize) -> String {
    format!("l{l}.weight")
}
fn bias(l: usize) -> String {
    format!("l{l}.bias")
}

/// Everything a run needs to continue from a step: the step count, parameters and optimizer
/// state. Random streams are derived from (seed, step), so they carry no state.
pub struct State {
    /// Optimizer steps taken.
    pub step: u64,
    /// Parameters by name.
    pub params: BTreeMap<String, Var>,
    /// Optimizer state by name (`adam.m/…`, `adam.v/…`, `sgd.velocity/…`).
    pub optimizer: BTreeMap<String, Tensor>,
}

impl State {
    /// Fresh parameters: zeros for the linear models (their loss is convex), Glorot or He uniform
    /// for the MLP, from the seed's `init` streams; zero biases and optimizer state.
    pub fn init(arch: &Architecture, seed: u64) -> candle_core::Result<State> {
        let dev = Device::Cpu;
        let mut params = BTreeMap::new();
        let hidden = arch.layers.len() > 1;
        for (l, &(i, o)) in arch.layers.iter().enumerate() {
            let w = if hidden {
                let fan = if arch.activation == Activation::Relu && l + 1 < arch.layers.len() {
                    i as f32
                } else {
                    (i + o) as f32 / 2.0
                };
                let a = (3.0 / fan).sqrt();
                let mut s = Stream::new(seed, "init", l as u64);
                (0..i * o).map(|_| (s.unit_f32() * 2.0 - 1.0) * a).collect()
            } else {
                vec![0f32; i * o]
            };
            params.insert(
                weight(l),
                Var::from_tensor(&Tensor::from_vec(w, (i, o), &dev)?)?,
            );
            params.insert(
                bias(l),
                Var::from_tensor(&Tensor::zeros(o, candle_core::DType::F32, &dev)?)?,
            );
        }
        Ok(State {
            step: 0,
            params,
            optimizer: BTreeMap::new(),
        })
    }

    /// The checkpoint form: `param/…` and optimizer tensors, step in the metadata.
    pub fn to_file(&self) -> candle_core::Result<TensorFile> {
        let mut f = TensorFile::default();
        f.metadata.insert("kind".into(), "checkpoint".into());
        f.metadata.insert("step".into(), self.step.to_string());
        for (name, v) in &self.params {
            put(&mut f, &format!("param/{name}"), v.as_tensor())?;
        }
        for (name, t) in &self.optimizer {
            put(&mut f, name, t)?;
        }
        Ok(f)
    }

    /// Restores a checkpoint, checking every parameter's shape against the architecture.
    pub fn from_file(f: &TensorFile, arch: &Architecture) -> Result<State, FormatError> {
        let step: u64 = f
            .meta("step")?
            .parse()
            .map_err(|_| FormatError("step is not a number".into()))?;
        let dev = Device::Cpu;
        let tensor = |shape: &[usize], v: &[f32]| {
            Tensor::from_vec(v.to_vec(), shape, &dev).map_err(|e| FormatError(e.to_string()))
        };
        let mut params = BTreeMap::new();
        for (l, &(i, o)) in arch.layers.iter().enumerate() {
            for (name, want) in [(weight(l), vec![i, o]), (bias(l), vec![o])] {
                let (shape, v) = f.f32(&format!("param/{name}"))?;
                if shape != want.as_slice() {
                    return Err(FormatError(format!(
                        "{name}: shape {shape:?}, expected {want:?}"
                    )));
                }
                let var =
                    Var::from_tensor(&tensor(shape, v)?).map_err(|e| FormatError(e.to_string()))?;
                params.insert(name, var);
            }
        }
        let mut optimizer = BTreeMap::new();
        for (name, e) in &f.tensors {
            if name.starts_with("param/") {
                continue;
            }
            let (shape, v) = f.f32(name)?;
            let param = name.split_once('/').map(|(_, p)| p).unwrap_or("");
            let want = params
                .get(param)
                .map(|p| p.as_tensor().dims().to_vec())
                .ok_or_else(|| FormatError(format!("optimizer state {name:?} has no parameter")))?;
            if e.shape != want {
                return Err(FormatError(format!(
                    "{name}: shape {shape:?}, expected {want:?}"
                )));
            }
            optimizer.insert(name.clone(), tensor(shape, v)?);
        }
        Ok(State {
            step,
            params,
            optimizer,
        })
    }
}

fn put(f: &mut TensorFile, name: &str, t: &Tensor) -> candle_core::Result<()> {
    f.put_f32(name, t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?);
    Ok(())
}

/// Forward pass; `dropout` is `Some((seed, step))` in training.
pub fn forward(
    arch: &Architecture,
    params: &BTreeMap<String, Var>,
    x: &Tensor,
    dropout: Option<(u64, u64)>,
) -> candle_core::Result<Tensor> {
    let mut h = x.clone();
    let last = arch.layers.len() - 1;
    for l in 0..arch.layers.len() {
        let (Some(w), Some(b)) = (params.get(&weight(l)), params.get(&bias(l))) else {
            candle_core::bail!("layer {l} has no parameters")
        };
        h = kernels::linear(&h, w.as_tensor(), b.as_tensor())?;
        if l < last {
            h = match arch.activation {
                Activation::Relu => h.relu()?,
                Activation::Tanh => h.apply_op1(kernels::Tanh)?,
            };
            if let Some((seed, step)) = dropout
                && arch.dropout > 0.0
            {
                let p = arch.dropout as f32;
                let keep = 1.0 / (1.0 - p);
                let mut s = Stream::new(seed, "dropout", step * 16 + l as u64);
                let mask: Vec<f32> = (0..h.elem_count())
                    .map(|_| if s.unit_f32() < p { 0.0 } else { keep })
                    .collect();
                let mask = Tensor::from_vec(mask, h.shape(), h.device())?;
                h = (h * mask)?;
            }
        }
    }
    Ok(h)
}

/// Training data in the form the network consumes.
pub struct Batches<'a> {
    /// Row-major standardised inputs of the training split.
    pub x: &'a [f32],
    /// Target per row (class index or value).
    pub y: &'a [f32],
    /// Input width.
    pub width: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Seed of the shuffles.
    pub seed: u64,
    shuffled: Option<(u64, Vec<usize>)>,
}

impl<'a> Batches<'a> {
    /// Batches over `x`/`y`.
    pub fn new(x: &'a [f32], y: &'a [f32], width: usize, batch_size: usize, seed: u64) -> Self {
        Batches {
            x,
            y,
            width,
            batch_size,
            seed,
            shuffled: None,
        }
    }

    /// Rows of the training split.
    pub fn rows(&self) -> usize {
        self.y.len()
    }

    /// Optimizer steps per epoch.
    pub fn per_epoch(&self) -> u64 {
        self.rows().div_ceil(self.batch_size) as u64
    }

    /// The inputs and targets of global step `step`: epoch `step / per_epoch` is a fresh
    /// shuffle from the seed's `shuffle` stream for that epoch.
    pub fn batch(&mut self, step: u64) -> candle_core::Result<(Tensor, Tensor)> {
        let epoch = step / self.per_epoch();
        let b = (step % self.per_epoch()) as usize;
        if self.shuffled.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<usize> = (0..self.rows()).collect();
            Stream::new(self.seed, "shuffle", epoch).shuffle(&mut order);
            self.shuffled = Some((epoch, order));
        }
        let order = self
            .shuffled
            .as_ref()
            .map(|(_, o)| o.as_slice())
            .unwrap_or(&[]);
        let rows = &order[b * self.batch_size..((b + 1) * self.batch_size).min(order.len())];
        let mut x = Vec::with_capacity(rows.len() * self.width);
        for &r in rows {
            x.extend_from_slice(&self.x[r * self.width..(r + 1) * self.width]);
        }
        let y: Vec<f32> = rows.iter().map(|&r| self.y[r]).collect();
        let dev = Device::Cpu;
        Ok((
            Tensor::from_vec(x, (rows.len(), self.width), &dev)?,
            Tensor::from_vec(y, rows.len(), &dev)?,
        ))
    }
}

/// One optimizer step; returns the batch loss.
pub fn step(
    arch: &Architecture,
    optimizer: &Optimizer,
    state: &mut State,
    batches: &mut Batches<'_>,
) -> candle_core::Result<f32> {
    let (x, y) = batches.batch(state.step)?;
    let out = forward(arch, &state.params, &x, Some((batches.seed, state.step)))?;
    let loss = out.apply_op2(&y, arch.output.loss())?;
    let grads = loss.backward()?;
    let t = state.step + 1;
    for (name, var) in &state.params {
        let w = var.as_tensor();
        let Some(g) = grads.get(w) else { continue };
        let g = if arch.l2 > 0.0 && name.ends_with(".weight") {
            (g + (w * arch.l2)?)?
        } else {
            g.clone()
        };
        let update = match optimizer {
            Optimizer::Sgd(Sgd { lr, momentum }) => {
                if *momentum > 0.0 {
                    let key = format!("sgd.velocity/{name}");
                    let v = match state.optimizer.get(&key) {
                        Some(v) => ((v * *momentum)? + &g)?,
                        None => g,
                    };
                    state.optimizer.insert(key, v.clone());
                    (v * *lr)?
                } else {
                    (g * *lr)?
                }
            }
            Optimizer::Adam(Adam {
                lr,
                beta1,
                beta2,
                eps,
            }) => {
                let (km, kv) = (format!("adam.m/{name}"), format!("adam.v/{name}"));
                let m = match state.optimizer.get(&km) {
                    Some(m) => ((m * *beta1)? + (&g * (1.0 - beta1))?)?,
                    None => (&g * (1.0 - beta1))?,
                };
                let v = match state.optimizer.get(&kv) {
                    Some(v) => ((v * *beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                    None => (g.sqr()? * (1.0 - beta2))?,
                };
                let m_hat = (&m * (1.0 / (1.0 - libm::pow(*beta1, t as f64))))?;
                let v_hat = (&v * (1.0 / (1.0 - libm::pow(*beta2, t as f64))))?;
                state.optimizer.insert(km, m);
                state.optimizer.insert(kv, v);
                ((m_hat / (v_hat.sqrt()? + *eps)?)? * *lr)?
            }
        };
        var.set(&(w - update)?)?;
    }
    state.step = t;
    loss.to_scalar::<f32>()
}

/// Raw outputs `[rows, outputs]` for standardised inputs, without dropout.
pub fn outputs(
    arch: &Architecture,
    params: &BTreeMap<String, Var>,
    x: &[f32],
    rows: usize,
) -> candle_core::Result<Vec<f32>> {
    let width = arch.layers[0].0;
    let x = Tensor::from_vec(x.to_vec(), (rows, width), &Device::Cpu)?;
    forward(arch, params, &x, None)?
        .flatten_all()?
        .to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch(output: Output, hidden: bool) -> Architecture {
        Architecture {
            layers: if hidden {
                vec![(2, 4), (4, 1)]
            } else {
                vec![(2, 1)]
            },
            activation: Activation::Tanh,
            dropout: if hidden { 0.25 } else { 0.0 },
            output,
            l2: 0.01,
        }
    }

    #[test]
    fn training_reduces_the_loss_and_checkpoints_round_trip() -> candle_core::Result<()> {
        // y = 1 when x0 + x1 > 0
        let mut s = Stream::new(5, "data", 0);
        let x: Vec<f32> = (0..400).map(|_| s.unit_f32() * 2.0 - 1.0).collect();
        let y: Vec<f32> = x
            .chunks(2)
            .map(|r| f32::from(u8::from(r[0] + r[1] > 0.0)))
            .collect();
        for (a, opt) in [
            (
                arch(Output::Logistic, false),
                Optimizer::Sgd(Sgd {
                    lr: 0.5,
                    momentum: 0.9,
                }),
            ),
            (
                arch(Output::Logistic, true),
                Optimizer::Adam(Adam {
                    lr: 0.05,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                }),
            ),
        ] {
            let mut state = State::init(&a, 9)?;
            let mut batches = Batches::new(&x, &y, 2, 16, 9);
            let first = step(&a, &opt, &mut state, &mut batches)?;
            let mut last = first;
            for _ in 0..100 {
                last = step(&a, &opt, &mut state, &mut batches)?;
            }
            assert!(last < first * 0.7, "loss {first} -> {last}");
            let file = state.to_file()?;
            let back = State::from_file(
                &TensorFile::from_bytes(&file.to_bytes()).expect("bytes"),
                &a,
            )
            .expect("restores");
            assert_eq!(back.to_file()?.to_bytes(), file.to_bytes());
            let wrong = arch(Output::Logistic, a.layers.len() <= 1);
            assert!(State::from_file(&file, &wrong).is_err());
        }
        Ok(())
    }
}
