//! Run-time choice of the burn backend: `cpu` (ndarray) always, `cuda` with the `cuda`
//! build feature.

use anyhow::{bail, Result};
pub use oni_policy::Device as DeviceKind;

/// The device a config key names, checked to work here and now, so that a missing
/// feature, driver or GPU fails at start with what to do.
pub fn check(key: &str, device: DeviceKind) -> Result<DeviceKind> {
    match device {
        DeviceKind::Cpu => Ok(device),
        DeviceKind::Cuda if cfg!(feature = "cuda") => {
            probe_cuda(key)?;
            Ok(device)
        }
        DeviceKind::Cuda => bail!(
            "config key `{key}` = \"cuda\" needs oni built with the cuda feature (cargo build --release -p oni --features cuda), or set it to \"cpu\""
        ),
    }
}

/// Runs one tiny computation on the default CUDA device; burn panics where there is no
/// driver or GPU.
#[cfg(feature = "cuda")]
fn probe_cuda(key: &str) -> Result<()> {
    use burn::prelude::*;
    static OK: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    let outcome = OK.get_or_init(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = std::panic::catch_unwind(|| {
            let t = Tensor::<oni_policy::CudaBackend, 1>::ones([4], &Default::default());
            t.sum().into_scalar()
        });
        std::panic::set_hook(hook);
        match r {
            Ok(v) if v == 4.0 => Ok(()),
            Ok(v) => Err(format!("a test sum on the GPU gave {v}, not 4")),
            Err(p) => Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()),
        }
    });
    match outcome {
        Ok(()) => Ok(()),
        Err(why) => bail!(
            "config key `{key}` = \"cuda\", but no CUDA device works here ({why}): check the NVIDIA driver with nvidia-smi, or set it to \"cpu\""
        ),
    }
}

#[cfg(not(feature = "cuda"))]
fn probe_cuda(_: &str) -> Result<()> {
    Ok(())
}

/// Calls `$body` with the type alias `$B` bound to the chosen backend and `$dev` to its
/// default device: `with_backend!(kind, autodiff, |B, dev| ...)`.
#[macro_export]
macro_rules! with_backend {
    ($kind:expr, autodiff, |$B:ident, $dev:ident| $body:expr) => {
        match $kind {
            $crate::device::DeviceKind::Cpu => {
                type $B = oni_policy::CpuAutodiff;
                let $dev = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::DeviceKind::Cuda => {
                type $B = oni_policy::CudaAutodiff;
                let $dev = Default::default();
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::device::DeviceKind::Cuda => unreachable!("rejected by device::check"),
        }
    };
    ($kind:expr, inference, |$B:ident, $dev:ident| $body:expr) => {
        match $kind {
            $crate::device::DeviceKind::Cpu => {
                type $B = oni_policy::CpuBackend;
                let $dev = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::DeviceKind::Cuda => {
                type $B = oni_policy::CudaBackend;
                let $dev = Default::default();
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::device::DeviceKind::Cuda => unreachable!("rejected by device::check"),
        }
    };
}
