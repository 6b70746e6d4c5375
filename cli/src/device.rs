//! Run-time choice of the burn backend: `cpu` (ndarray) always, `cuda` with the `cuda`
//! build feature.

use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

pub fn parse(key: &str, value: &str) -> Result<DeviceKind> {
    match value {
        "cpu" => Ok(DeviceKind::Cpu),
        "cuda" if cfg!(feature = "cuda") => Ok(DeviceKind::Cuda),
        "cuda" => bail!("config key `{key}` = \"cuda\" needs a build with `--features cuda`"),
        other => bail!("config key `{key}`: unknown device `{other}` (cpu, cuda)"),
    }
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
            $crate::device::DeviceKind::Cuda => unreachable!("rejected by device::parse"),
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
            $crate::device::DeviceKind::Cuda => unreachable!("rejected by device::parse"),
        }
    };
}
