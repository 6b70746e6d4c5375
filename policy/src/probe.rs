//! Whether a device works here and now, found out at start by one tiny computation on it, so
//! that a missing build feature, driver or GPU fails before training with what to do instead
//! of as a panic deep inside the backend.

use crate::config::Device;

/// Why a device cannot run the policy here. The messages end in what to do; the caller adds
/// the config key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error("needs oni built with the {feature} feature (cargo build --release -p oni --features {feature})")]
    NotBuilt { feature: &'static str },
    #[error("but no {what} works here ({why}): {hint}")]
    Unavailable { what: &'static str, why: String, hint: &'static str },
}

/// Runs a sum on `device` once per process (later calls return the first answer).
pub fn probe(device: Device) -> Result<(), DeviceError> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda => cuda(),
        Device::Wgpu => wgpu(),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<(), DeviceError> {
    static OUTCOME: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    OUTCOME.get_or_init(sum_of_ones::<crate::CudaBackend>).clone().map_err(|why| DeviceError::Unavailable {
        what: "CUDA device",
        why,
        hint: "check the NVIDIA driver with nvidia-smi",
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<(), DeviceError> {
    Err(DeviceError::NotBuilt { feature: "cuda" })
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<(), DeviceError> {
    static OUTCOME: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    OUTCOME.get_or_init(sum_of_ones::<crate::WgpuBackend>).clone().map_err(|why| DeviceError::Unavailable {
        what: "GPU adapter (Vulkan, Metal or DX12)",
        why,
        hint: "check the driver with `vulkaninfo --summary`; Debian's mesa-vulkan-drivers adds lavapipe, a Vulkan that runs on the CPU",
    })
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<(), DeviceError> {
    Err(DeviceError::NotBuilt { feature: "wgpu" })
}

/// Sums four ones on the backend's default device. burn panics where there is no driver or
/// device, possibly on a worker thread of the backend's (then this thread only sees a closed
/// channel), so the panic hook keeps every message and the first one is the reason given.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn sum_of_ones<B: burn::prelude::Backend>() -> Result<(), String> {
    use burn::prelude::*;
    use std::sync::{Arc, Mutex};
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let hook = std::panic::take_hook();
    let seen = messages.clone();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let text =
            payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(text.unwrap_or_else(|| "the backend panicked".into()));
    }));
    let outcome = std::panic::catch_unwind(|| {
        let t = Tensor::<B, 1>::ones([4], &Default::default());
        t.sum().into_scalar().elem::<f32>()
    });
    std::panic::set_hook(hook);
    let first = messages.lock().unwrap_or_else(|e| e.into_inner()).first().cloned();
    match outcome {
        Ok(4.0) => Ok(()),
        Ok(v) => Err(format!("a test sum on the device gave {v}, not 4")),
        Err(_) => Err(first.unwrap_or_else(|| "the backend panicked".into())),
    }
}
