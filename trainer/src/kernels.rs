//! Deterministic CPU kernels for candle, as custom ops with their own backward passes.
//!
//! candle's CPU matmul picks SIMD kernels at run time (FMA where the CPU has it), so the same
//! product rounds differently on different x86-64 CPUs; its `exp`/`tanh` call the platform libm,
//! which glibc also dispatches by CPU. Every operation here whose rounding could depend on the CPU
//! is ours instead:
//! - products reduce over the inner dimension in index order with a separate multiply and add
//!   (Rust never contracts them into an FMA); vectorisation only runs across independent outputs,
//!   and threads split output rows, so neither the SIMD width nor the thread count changes a bit;
//! - `exp`, `ln`, `tanh` come from the `libm` crate (pure Rust, same code on every CPU), and loss
//!   reductions run in f64 in row order.
//!
//! What candle still does for us: tensor bookkeeping, autograd, and element-wise `+ - * / sqrt
//! max`, which IEEE 754 rounds identically everywhere.

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

static THREADS: AtomicUsize = AtomicUsize::new(1);

/// Sets the threads the kernels may use (results do not depend on it).
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// The threads the kernels use.
pub fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 17;

/// `out[m,n] = a[m,k] · b[k,n]`, each element summed over `k` in order.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    let threads = threads().min(m);
    if threads <= 1 || m * k * n < PARALLEL_MIN_WORK {
        rows_into(a, b, k, n, &mut out);
    } else {
        let per = m.div_ceil(threads);
        std::thread::scope(|s| {
            for (a_rows, out_rows) in a.chunks(per * k).zip(out.chunks_mut(per * n)) {
                s.spawn(move || rows_into(a_rows, b, k, n, out_rows));
            }
        });
    }
    out
}

fn rows_into(a: &[f32], b: &[f32], k: usize, n: usize, out: &mut [f32]) {
    for (a_row, acc) in a.chunks_exact(k.max(1)).zip(out.chunks_exact_mut(n)) {
        for (kk, &x) in a_row.iter().enumerate().take(k) {
            let b_row = &b[kk * n..(kk + 1) * n];
            for (c, &w) in acc.iter_mut().zip(b_row) {
                *c += x * w;
            }
        }
    }
}

/// `[r, c]` row-major to `[c, r]` row-major.
pub fn transpose(a: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = a[i * c + j];
        }
    }
    out
}

/// The f32 elements of a storage in logical (row-major) order, whatever its strides.
fn gather(storage: &CpuStorage, layout: &Layout) -> Result<Vec<f32>> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("deterministic kernels take f32 tensors")
    };
    if let Some((start, end)) = layout.contiguous_offsets() {
        return Ok(data[start..end].to_vec());
    }
    let dims = layout.dims();
    let stride = layout.stride();
    let count: usize = dims.iter().product();
    let mut out = Vec::with_capacity(count);
    let mut index = vec![0usize; dims.len()];
    for _ in 0..count {
        let offset: usize =
            layout.start_offset() + index.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(data[offset]);
        for d in (0..dims.len()).rev() {
            index[d] += 1;
            if index[d] < dims[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(out)
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

fn dims2(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    match layout.dims() {
        [r, c] => Ok((*r, *c)),
        other => candle_core::bail!("{what} must be 2-D, got shape {other:?}"),
    }
}

/// `x[m,k] · w[k,n] + b[n]`.
pub struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "neurodata-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = dims2(xl, "linear input")?;
        let (k2, n) = dims2(wl, "linear weight")?;
        if k != k2 || bl.dims() != [n] {
            candle_core::bail!(
                "linear: input {:?}, weight {:?}, bias {:?} do not fit",
                xl.dims(),
                wl.dims(),
                bl.dims()
            );
        }
        let (x, w, b) = (gather(x, xl)?, gather(w, wl)?, gather(b, bl)?);
        let mut y = matmul(&x, &w, m, k, n);
        for row in y.chunks_exact_mut(n.max(1)) {
            for (v, &bias) in row.iter_mut().zip(&b) {
                *v += bias;
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, k) = x.dims2()?;
        let (_, n) = w.dims2()?;
        let (xv, wv, gv) = (values(x)?, values(w)?, values(g)?);
        let dx = matmul(&gv, &transpose(&wv, k, n), m, n, k);
        let dw = matmul(&transpose(&xv, m, k), &gv, k, m, n);
        let mut db = vec![0f32; n];
        for row in gv.chunks_exact(n.max(1)) {
            for (d, &v) in db.iter_mut().zip(row) {
                *d += v;
            }
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (m, k), dev)?),
            Some(Tensor::from_vec(dw, (k, n), dev)?),
            Some(Tensor::from_vec(db, n, dev)?),
        ))
    }
}

/// Applies the deterministic linear layer.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.apply_op3(w, b, Linear)
}

/// `tanh` from the libm crate.
pub struct Tanh;

impl CustomOp1 for Tanh {
    fn name(&self) -> &'static str {
        "neurodata-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y: Vec<f32> = gather(s, l)?.into_iter().map(libm::tanhf).collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let d: Vec<f32> = values(y)?
            .into_iter()
            .zip(values(g)?)
            .map(|(y, g)| g * (1.0 - y * y))
            .collect();
        Ok(Some(Tensor::from_vec(d, y.shape(), y.device())?))
    }
}

/// How model outputs are turned into a loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// One logit per row, target 0/1: binary cross-entropy on the sigmoid.
    Logistic,
    /// One logit per class, target the class index: cross-entropy on the softmax.
    Softmax,
    /// One output per row, numeric target: mean squared error.
    Squared,
}

impl CustomOp2 for Loss {
    fn name(&self) -> &'static str {
        "neurodata-loss"
    }

    fn cpu_fwd(
        &self,
        z: &CpuStorage,
        zl: &Layout,
        y: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, c) = dims2(zl, "model output")?;
        if yl.dims() != [m] {
            candle_core::bail!("loss: {m} outputs but targets {:?}", yl.dims());
        }
        let (loss, _) = self.evaluate(&gather(z, zl)?, &gather(y, yl)?, m, c, false);
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        z: &Tensor,
        y: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (m, c) = z.dims2()?;
        let (_, mut grad) = self.evaluate(&values(z)?, &values(y)?, m, c, true);
        let scale = g.to_scalar::<f32>()?;
        for v in &mut grad {
            *v *= scale;
        }
        Ok((Some(Tensor::from_vec(grad, (m, c), z.device())?), None))
    }
}

impl Loss {
    /// Mean loss over the rows and, when asked, its gradient w.r.t. the outputs.
    pub fn evaluate(
        &self,
        z: &[f32],
        y: &[f32],
        m: usize,
        c: usize,
        grad: bool,
    ) -> (f64, Vec<f32>) {
        let mut total = 0f64;
        let mut d = if grad { vec![0f32; m * c] } else { Vec::new() };
        let inv_m = 1.0 / m.max(1) as f64;
        for i in 0..m {
            let row = &z[i * c..(i + 1) * c];
            match self {
                Loss::Logistic => {
                    let (zi, yi) = (f64::from(row[0]), f64::from(y[i]));
                    total += softplus(zi) - yi * zi;
                    if grad {
                        d[i] = ((sigmoid(zi) - yi) * inv_m) as f32;
                    }
                }
                Loss::Softmax => {
                    let target = y[i] as usize;
                    let (max, e, sum) = shifted_exps(row);
                    total += max + libm::log(sum) - f64::from(row[target]);
                    if grad {
                        for (j, ej) in e.iter().enumerate() {
                            let hot = if j == target { 1.0 } else { 0.0 };
                            d[i * c + j] = ((ej / sum - hot) * inv_m) as f32;
                        }
                    }
                }
                Loss::Squared => {
                    let r = f64::from(row[0]) - f64::from(y[i]);
                    total += r * r;
                    if grad {
                        d[i] = (2.0 * r * inv_m) as f32;
                    }
                }
            }
        }
        (total * inv_m, d)
    }
}

/// `ln(1 + e^z)` without overflow.
pub fn softplus(z: f64) -> f64 {
    z.max(0.0) + libm::log1p(libm::exp(-z.abs()))
}

/// The logistic function, stable for large |z|.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + libm::exp(-z))
    } else {
        let e = libm::exp(z);
        e / (1.0 + e)
    }
}

/// Softmax of one row of logits, in f64.
pub fn softmax(row: &[f32]) -> Vec<f64> {
    let (_, e, sum) = shifted_exps(row);
    e.into_iter().map(|v| v / sum).collect()
}

/// The row's maximum, `exp(z - max)` per entry, and their sum (the loss and softmax share it).
fn shifted_exps(row: &[f32]) -> (f64, Vec<f64>, f64) {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |a, &b| a.max(f64::from(b)));
    let e: Vec<f64> = row.iter().map(|&v| libm::exp(f64::from(v) - max)).collect();
    let sum = e.iter().sum();
    (max, e, sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f32;
                for kk in 0..k {
                    acc += a[i * k + kk] * b[kk * n + j];
                }
                out[i * n + j] = acc;
            }
        }
        out
    }

    #[test]
    fn matmul_is_the_in_order_sum_at_any_thread_count() {
        let (m, k, n) = (67, 129, 65);
        let mut s = crate::rng::Stream::new(1, "test", 0);
        let a: Vec<f32> = (0..m * k).map(|_| s.unit_f32() - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|_| s.unit_f32() - 0.5).collect();
        let want = naive(&a, &b, m, k, n);
        for t in [1, 2, 3, 8] {
            set_threads(t);
            let got = matmul(&a, &b, m, k, n);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{t} threads"
            );
        }
        set_threads(1);
    }

    #[test]
    fn linear_and_loss_gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(vec![0.5f32, -1.0, 2.0, 0.25, 1.5, -0.75], (3, 2), &dev)?;
        let w = Var::from_tensor(&Tensor::from_vec(
            vec![0.1f32, -0.2, 0.3, 0.4, 0.05, -0.1],
            (2, 3),
            &dev,
        )?)?;
        let b = Var::from_tensor(&Tensor::from_vec(vec![0.0f32, 0.1, -0.1], 3, &dev)?)?;
        let y = Tensor::from_vec(vec![0f32, 2.0, 1.0], 3, &dev)?;
        let loss = |w: &Tensor| -> Result<f32> {
            linear(&x, w, b.as_tensor())?
                .apply_op2(&y, Loss::Softmax)?
                .to_scalar::<f32>()
        };
        let out = linear(&x, w.as_tensor(), b.as_tensor())?.apply_op2(&y, Loss::Softmax)?;
        let grads = out.backward()?;
        let gw = values(grads.get(w.as_tensor()).expect("weight grad"))?;
        let base = values(w.as_tensor())?;
        for i in 0..base.len() {
            let mut plus = base.clone();
            plus[i] += 1e-3;
            let mut minus = base.clone();
            minus[i] -= 1e-3;
            let numeric = (loss(&Tensor::from_vec(plus, (2, 3), &dev)?)?
                - loss(&Tensor::from_vec(minus, (2, 3), &dev)?)?)
                / 2e-3;
            assert!(
                (numeric - gw[i]).abs() < 2e-3,
                "w[{i}]: {numeric} vs {}",
                gw[i]
            );
        }
        assert!(grads.get(b.as_tensor()).is_some());
        Ok(())
    }

    #[test]
    fn losses_are_stable_at_extreme_logits() {
        let (l, _) = Loss::Logistic.evaluate(&[1000.0, -1000.0], &[1.0, 0.0], 2, 1, false);
        assert!(l.abs() < 1e-12);
        let (l, g) = Loss::Softmax.evaluate(&[500.0, -500.0], &[1.0], 1, 2, true);
        assert!(l.is_finite() && l > 900.0);
        assert!(g.iter().all(|v| v.is_finite()));
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15 && sigmoid(-800.0) >= 0.0);
    }
}
