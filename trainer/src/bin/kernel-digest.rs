//! Prints SHA-256 digests of one 257×257 product computed by candle's default CPU matmul and by
//! our deterministic kernel. Run under `qemu-x86_64 -cpu MODEL`, the first changes with the
//! CPU's SIMD level (candle dispatches FMA kernels at run time) while the second must not; the
//! bit-exactness test uses it as its control.

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

fn main() -> anyhow::Result<()> {
    let n = 257;
    let mut s = neurodata_trainer::rng::Stream::new(7, "kernel-digest", 0);
    let a: Vec<f32> = (0..n * n).map(|_| s.unit_f32() - 0.5).collect();
    let b: Vec<f32> = (0..n * n).map(|_| s.unit_f32() - 0.5).collect();
    let ta = Tensor::from_vec(a.clone(), (n, n), &Device::Cpu)?;
    let tb = Tensor::from_vec(b.clone(), (n, n), &Device::Cpu)?;
    let candle: Vec<f32> = ta.matmul(&tb)?.flatten_all()?.to_vec1()?;
    let ours = neurodata_trainer::kernels::matmul(&a, &b, n, n, n);
    let digest = |v: &[f32]| {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        hex::encode(Sha256::digest(bytes))
    };
    println!("candle {}", digest(&candle));
    println!("deterministic {}", digest(&ours));
    Ok(())
}
