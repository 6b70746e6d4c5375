//! The GPU code path checked without a GPU: one whole learner update (forward over the
//! rollouts, V-trace, the APPO loss, gradients through the fused GRU and ELU nodes, global
//! norm clipping, one Adam step) on burn's wgpu backend, which runs the same CubeCL kernels
//! and fusion as CUDA, against the CPU backend from the same weights and batch.
//!
//! Run with `cargo test --release -p oni-learner --features wgpu --test cross_backend`; it
//! needs a Vulkan driver, which Mesa's lavapipe (Debian: mesa-vulkan-drivers) provides on
//! any CPU.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use oni_env::{GridKind, ObsSpec, TTY_CELLS};
use oni_learner::batch::RewardMix;
use oni_learner::trainer::Trainer;
use oni_learner::LearnerConfig;
use oni_policy::{weights, CpuAutodiff, Network, PolicyConfig, TrainingBackend, WgpuAutodiff};

mod common;
use common::rollouts;

/// Largest difference allowed between the backends, relative to the largest magnitude of
/// the compared tensor. f32 sums taken in another order (GPU reductions are trees, the CPU's
/// blocked loops) differ by a few ulps per term: measured on lavapipe, at most 2e-6 for any
/// gradient and 1e-5 for the Adam step. 1e-4 leaves room for other drivers and still catches
/// a wrong index, a missing term or a wrong sign, which give errors of order 1.
const TOLERANCE: f32 = 1e-4;

/// Every float parameter of a module, in visiting order, as (id, rank, values).
struct Values(Vec<(ParamId, usize, Vec<f32>)>);

impl<B: Backend> ModuleVisitor<B> for Values {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        self.0.push((p.id, D, p.val().into_data().convert::<f32>().to_vec().unwrap()));
    }
}

fn params<B: Backend, M: Module<B>>(m: &M) -> Vec<(ParamId, usize, Vec<f32>)> {
    let mut v = Values(Vec::new());
    m.visit(&mut v);
    v.0
}

/// Each parameter's gradient of the loss, in visiting order (zeros where none flows).
fn gradients<B: TrainingBackend>(tr: &Trainer<B>, data: &[oni_proto::v1::Rollout]) -> (f32, Vec<Vec<f32>>) {
    let loss = tr.loss(data);
    let value = loss.clone().into_scalar().elem::<f32>();
    let grads = GradientsParams::from_grads(loss.backward(), &tr.model);
    let grads = params(&tr.model)
        .into_iter()
        .map(|(id, rank, values)| {
            type Inner<B> = <B as AutodiffBackend>::InnerBackend;
            let data = match rank {
                1 => grads.get::<Inner<B>, 1>(id).map(|g| g.into_data()),
                2 => grads.get::<Inner<B>, 2>(id).map(|g| g.into_data()),
                3 => grads.get::<Inner<B>, 3>(id).map(|g| g.into_data()),
                4 => grads.get::<Inner<B>, 4>(id).map(|g| g.into_data()),
                r => panic!("a parameter of rank {r}"),
            };
            match data {
                Some(d) => d.convert::<f32>().to_vec().unwrap(),
                None => vec![0.0; values.len()],
            }
        })
        .collect();
    (value, grads)
}

/// max |a − b| / max(|a|), the error of `b` relative to the scale of `a`.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// ‖a − b‖₂ / ‖a‖₂.
fn relative_l2(a: &[f32], b: &[f32]) -> f32 {
    let diff: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let norm: f32 = a.iter().map(|x| x * x).sum();
    (diff / norm.max(1e-30)).sqrt()
}

fn check_update(pcfg: PolicyConfig, spec: ObsSpec, rollout_len: usize, batch: usize) {
    let cfg = LearnerConfig { rollout_len, batch_rollouts: batch, learning_rate: 1e-3, ..Default::default() };
    let mix = RewardMix { extrinsic_coef: 1.0, intrinsic_coef: 0.0, clip: 10.0 };
    let data = rollouts(batch, rollout_len, pcfg.core_hidden, &spec);
    let mut cpu = Trainer::<CpuAutodiff>::new(cfg.clone(), pcfg.clone(), spec.clone(), mix, Default::default());
    let mut gpu = Trainer::<WgpuAutodiff>::new(cfg, pcfg, spec, mix, Default::default());
    gpu.model = weights::load_bytes(gpu.model, &cpu.weights_bytes()).expect("the same network");

    let (loss_cpu, grads_cpu) = gradients(&cpu, &data);
    let (loss_gpu, grads_gpu) = gradients(&gpu, &data);
    assert!(loss_cpu.is_finite(), "CPU loss {loss_cpu}");
    assert!(
        (loss_cpu - loss_gpu).abs() <= TOLERANCE * loss_cpu.abs().max(1.0),
        "loss: CPU {loss_cpu}, wgpu {loss_gpu}"
    );
    assert_eq!(grads_cpu.len(), grads_gpu.len());
    let mut nonzero = 0;
    let mut worst = 0f32;
    let mut wrong = Vec::new();
    for (i, (a, b)) in grads_cpu.iter().zip(&grads_gpu).enumerate() {
        nonzero += a.iter().any(|x| *x != 0.0) as usize;
        let e = relative_error(a, b);
        worst = worst.max(e);
        if e > TOLERANCE {
            wrong.push(format!(
                "parameter #{i} ({} values): relative error {e}; cpu {:?}… wgpu {:?}…",
                a.len(),
                &a[..4.min(a.len())],
                &b[..4.min(b.len())]
            ));
        }
    }
    assert!(wrong.is_empty(), "gradients differ:\n{}", wrong.join("\n"));
    assert_eq!(nonzero, grads_cpu.len(), "every parameter gets a gradient on the CPU");

    // One optimizer step from the same point. Adam's first step is lr · g / (|g| + ε), near
    // lr · sign(g), so a gradient within rounding of zero may step either way: compare the
    // whole step's direction instead of each element.
    let before: Vec<Vec<f32>> = params(&cpu.model).into_iter().map(|(_, _, v)| v).collect();
    let report_cpu = cpu.train(&data);
    let report_gpu = gpu.train(&data);
    assert!(
        (report_cpu.grad_norm - report_gpu.grad_norm).abs() <= TOLERANCE * report_cpu.grad_norm,
        "gradient norm: CPU {}, wgpu {}",
        report_cpu.grad_norm,
        report_gpu.grad_norm
    );
    let step = |m: Vec<(ParamId, usize, Vec<f32>)>| -> Vec<f32> {
        m.into_iter().zip(&before).flat_map(|((_, _, after), b)| after.into_iter().zip(b).map(|(x, y)| x - y)).collect()
    };
    let (step_cpu, step_gpu) = (step(params(&cpu.model)), step(params(&gpu.model)));
    assert!(step_cpu.iter().any(|d| *d != 0.0), "the CPU step changed nothing");
    let e = relative_l2(&step_cpu, &step_gpu);
    assert!(e <= 1e-3, "Adam step: ‖Δcpu − Δwgpu‖ / ‖Δcpu‖ = {e}");
    println!(
        "loss {loss_cpu} vs {loss_gpu}; worst gradient error {worst:.2e} of {} parameters; step error {e:.2e}",
        grads_cpu.len()
    );
}

#[test]
fn glyph_crop_update_matches_the_cpu() {
    let spec =
        ObsSpec { crop_rows: 5, crop_cols: 5, num_glyphs: 6, stats_dim: 3, num_actions: 4, grid: GridKind::Glyphs };
    let pcfg = PolicyConfig {
        glyph_conv_layers: 2,
        glyph_channels: 8,
        glyph_hidden: 16,
        message_bytes: 8,
        core_hidden: 16,
        ..Default::default()
    };
    check_update(pcfg, spec, 12, 4);
}

#[test]
fn oni_network_update_matches_the_cpu() {
    // ONI's network (the terminal drawn to pixels, three convolutions, MLPs), narrowed so that
    // a CPU Vulkan runs it in seconds, over ONI's 32-step unroll.
    let spec = ObsSpec {
        crop_rows: 9,
        crop_cols: 9,
        num_glyphs: TTY_CELLS,
        stats_dim: 5,
        num_actions: 8,
        grid: GridKind::Tty,
    };
    let pcfg = PolicyConfig {
        network: Network::Oni,
        stats_hidden: 16,
        message_bytes: 256,
        message_hidden: 16,
        screen_hidden: 32,
        core_hidden: 32,
        ..Default::default()
    };
    check_update(pcfg, spec, 32, 3);
}

/// Where no Vulkan driver is installed, choosing wgpu fails at start, saying what is missing
/// and what to do, rather than panicking inside the backend. Run in a child process whose
/// Vulkan loader finds no driver (the backend keeps its device for the process's life).
#[test]
fn no_vulkan_driver_fails_the_probe_with_what_to_do() {
    assert_eq!(oni_policy::probe(oni_policy::Device::Wgpu), Ok(()), "lavapipe is installed here");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "probe_without_a_driver", "--ignored", "--nocapture"])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

/// The child of the test above.
#[test]
#[ignore = "run by no_vulkan_driver_fails_the_probe_with_what_to_do in a process without a Vulkan driver"]
fn probe_without_a_driver() {
    match oni_policy::probe(oni_policy::Device::Wgpu) {
        Err(e @ oni_policy::DeviceError::Unavailable { .. }) => {
            let text = e.to_string();
            println!("{text}");
            assert!(text.contains("no GPU adapter") && text.contains("mesa-vulkan-drivers"), "{text}");
        }
        other => panic!("wgpu without a driver: {other:?}"),
    }
}
