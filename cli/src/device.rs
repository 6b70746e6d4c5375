//! Run-time choice of the burn backend: `cpu` (Flex) always, `cuda` and `wgpu` with their
//! build features.

use anyhow::{anyhow, Result};
pub use oni_policy::Device as DeviceKind;

/// The device a config key names, checked to work here and now, so that a missing
/// feature, driver or GPU fails at start with what to do.
pub fn check(key: &str, device: DeviceKind) -> Result<DeviceKind> {
    oni_policy::probe(device)
        .map(|()| device)
        .map_err(|e| anyhow!("config key `{key}` = \"{}\" {e}; or set it to \"cpu\"", device.name()))
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
            #[cfg(feature = "wgpu")]
            $crate::device::DeviceKind::Wgpu => {
                type $B = oni_policy::WgpuAutodiff;
                let $dev = Default::default();
                $body
            }
            #[cfg(not(feature = "wgpu"))]
            $crate::device::DeviceKind::Wgpu => unreachable!("rejected by device::check"),
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
            #[cfg(feature = "wgpu")]
            $crate::device::DeviceKind::Wgpu => {
                type $B = oni_policy::WgpuBackend;
                let $dev = Default::default();
                $body
            }
            #[cfg(not(feature = "wgpu"))]
            $crate::device::DeviceKind::Wgpu => unreachable!("rejected by device::check"),
        }
    };
}
