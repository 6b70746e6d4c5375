//! Finding, checking and loading NLE's `libnethack.so`. NetHack keeps its state in globals,
//! so every environment instance gets a private copy of the library: the file is copied into
//! a memfd and the memfd's path is `dlopen`ed once per instance. NetHack's globals are only
//! reset by unloading, which NLE does on every reset; instead, the copy's writable segment
//! (`.data` and `.bss`) is saved right after loading and written back between games
//! ([`Pristine`]), which costs a copy of ~320 KB instead of an unload, a reload, relocation
//! and a page fault for every page the next game touches.

use super::ffi;
use crate::EnvError;
use sha2::{Digest, Sha256};
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

/// The NLE release whose struct layout `ffi` describes.
pub const NLE_VERSION: &str = "1.3.0";

/// sha256 of the `libnethack.so` builds we have checked against `ffi`'s layouts.
const KNOWN_BUILDS: &[&str] = &[
    // nle-1.3.0-cp311-cp311-manylinux2014_x86_64
    "becf6478c75e40cf9488d6127892951f28ef8736b7b71ce22c37af006b280027",
];

pub const INSTALL_HINT: &str =
    "install it with `scripts/setup.sh` (makes ~/.cache/oni/venv with `pip install nle==1.3.0`), \
or point `env.nle_dir` / ONI_NLE_DIR at the `nle` package directory of an nle==1.3.0 installation";

fn missing(what: String) -> EnvError {
    EnvError::Failed { env: "nethack".into(), reason: format!("{what}; {INSTALL_HINT}") }
}

/// A verified NLE installation: the library's bytes and the data file.
#[derive(Debug)]
pub struct NleLibrary {
    pub dir: PathBuf,
    pub bytes: Arc<Vec<u8>>,
    pub nhdat: PathBuf,
}

/// Candidate `nle` package directories, in order of precedence.
fn candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = configured {
        v.push(p.to_path_buf());
        return v;
    }
    if let Ok(p) = std::env::var("ONI_NLE_DIR") {
        v.push(PathBuf::from(p));
        return v;
    }
    let cache = std::env::var("ONI_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/oni"));
    if let Ok(entries) = std::fs::read_dir(cache.join("venv/lib")) {
        for e in entries.flatten() {
            v.push(e.path().join("site-packages/nle"));
        }
    }
    v
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

impl NleLibrary {
    /// Finds the installation and checks that it is exactly NLE 1.3.0 as `ffi` describes.
    pub fn locate(configured: Option<&Path>) -> Result<NleLibrary, EnvError> {
        let tried = candidates(configured);
        let dir = tried.iter().find(|d| d.join("libnethack.so").exists()).cloned().ok_or_else(|| {
            let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
            missing(format!(
                "NLE's libnethack.so was not found (looked in: {})",
                if list.is_empty() { "nothing configured".into() } else { list.join(", ") }
            ))
        })?;
        let lib = dir.join("libnethack.so");
        let nhdat = dir.join("nethackdir/nhdat");
        if !nhdat.exists() {
            return Err(missing(format!("NetHack's data file {} is missing", nhdat.display())));
        }
        let version = read_dist_version(&dir);
        if version.as_deref() != Some(NLE_VERSION) {
            return Err(EnvError::Failed {
                env: "nethack".into(),
                reason: format!(
                    "{} is NLE {}, but oni is built for NLE {NLE_VERSION} (the C structs differ between releases); \
                     install nle=={NLE_VERSION}",
                    dir.display(),
                    version.unwrap_or_else(|| "of unknown version".into())
                ),
            });
        }
        let bytes = std::fs::read(&lib).map_err(|e| missing(format!("cannot read {}: {e}", lib.display())))?;
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if let Some(record) = read_record_hash(&dir) {
            if record != base64url(&digest) {
                return Err(EnvError::Failed {
                    env: "nethack".into(),
                    reason: format!("{} does not match its wheel's RECORD (modified or corrupted)", lib.display()),
                });
            }
        }
        if !KNOWN_BUILDS.contains(&hex.as_str()) {
            return Err(EnvError::Failed {
                env: "nethack".into(),
                reason: format!(
                    "{} (sha256 {hex}) is not a libnethack.so build whose layout oni has checked; \
                     use the cp311 x86_64 wheel of nle=={NLE_VERSION}",
                    lib.display()
                ),
            });
        }
        Ok(NleLibrary { dir, bytes: Arc::new(bytes), nhdat })
    }
}

fn dist_info(dir: &Path) -> Option<PathBuf> {
    let parent = dir.parent()?;
    std::fs::read_dir(parent).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("nle-") && n.ends_with(".dist-info"))
    })
}

fn read_dist_version(dir: &Path) -> Option<String> {
    let meta = std::fs::read_to_string(dist_info(dir)?.join("METADATA")).ok()?;
    meta.lines().find_map(|l| l.strip_prefix("Version: ")).map(|v| v.trim().to_string())
}

fn read_record_hash(dir: &Path) -> Option<String> {
    let record = std::fs::read_to_string(dist_info(dir)?.join("RECORD")).ok()?;
    let line = record.lines().find(|l| l.starts_with("nle/libnethack.so,"))?;
    line.split(',').nth(1)?.strip_prefix("sha256=").map(str::to_string)
}

/// libstdc++ must be loaded globally before the first copy of libnethack: otherwise it is
/// bound to that copy, which then can never be unloaded, and reloading it crashes.
fn preload_libstdcxx() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| unsafe {
        let name = CString::new("libstdc++.so.6").unwrap();
        if libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL).is_null() {
            tracing::warn!("could not preload libstdc++.so.6; NetHack resets may fail");
        }
    });
}

fn dl_error() -> String {
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown dlopen error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// One private copy of the library, held in a memfd for the life of an env instance.
pub struct PrivateCopy {
    fd: libc::c_int,
    path: CString,
    program_headers: Vec<(usize, usize)>,
}

impl PrivateCopy {
    pub fn new(lib: &NleLibrary) -> Result<Self, EnvError> {
        preload_libstdcxx();
        let name = CString::new("oni-nethack").unwrap();
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(fail(format!("memfd_create: {}", std::io::Error::last_os_error())));
        }
        let mut written = 0;
        while written < lib.bytes.len() {
            let n =
                unsafe { libc::write(fd, lib.bytes[written..].as_ptr() as *const c_void, lib.bytes.len() - written) };
            if n <= 0 {
                unsafe { libc::close(fd) };
                return Err(fail(format!("writing the library copy: {}", std::io::Error::last_os_error())));
            }
            written += n as usize;
        }
        let program_headers = writable_ranges(&lib.bytes).map_err(|e| {
            unsafe { libc::close(fd) };
            fail(format!("reading the library's program headers: {e}"))
        })?;
        Ok(PrivateCopy { fd, path: CString::new(format!("/proc/self/fd/{fd}")).unwrap(), program_headers })
    }

    /// Loads the copy afresh. DEEPBIND makes NetHack's own `error()` win over glibc's
    /// (which would `exit()` the whole process).
    pub fn load(&self) -> Result<Loaded, EnvError> {
        unsafe {
            let already = libc::dlopen(self.path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            if !already.is_null() {
                libc::dlclose(already);
                return Err(fail("the previous episode's library copy is still loaded".into()));
            }
            let h = libc::dlopen(self.path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_DEEPBIND);
            if h.is_null() {
                return Err(fail(format!("dlopen: {}", dl_error())));
            }
            let sym = |name: &str| {
                let c = CString::new(name).unwrap();
                let p = libc::dlsym(h, c.as_ptr());
                if p.is_null() {
                    Err(fail(format!("symbol `{name}` missing: not NLE {NLE_VERSION}")))
                } else {
                    Ok(p)
                }
            };
            let loaded = (|| {
                let start: ffi::StartFn = std::mem::transmute(sym("nle_start")?);
                let step: ffi::StepFn = std::mem::transmute(sym("nle_step")?);
                let end: ffi::EndFn = std::mem::transmute(sym("nle_end")?);
                // present from 1.3.0 on, the release that added the moon-phase settings
                sym("nle_fill_fixed_tm")?;
                let version: ffi::VersionFn = std::mem::transmute(sym("version_string")?);
                let mut buf = [0 as c_char; 256];
                let v = CStr::from_ptr(version(buf.as_mut_ptr())).to_string_lossy().into_owned();
                if v != "3.6.7" {
                    return Err(fail(format!("library reports NetHack {v}, expected 3.6.7")));
                }
                // called for a game ended early, as NetHack's own end calls it (see `Game::close`)
                let exit_windows: ffi::ExitWindowsFn =
                    std::mem::transmute(sym("_ZN10nethack_rl9NetHackRL17rl_exit_nhwindowsEPKc")?);
                let pristine = Pristine::save(h, &self.program_headers)?;
                Ok(Loaded { handle: h, start, step, end, exit_windows, pristine })
            })();
            if loaded.is_err() {
                libc::dlclose(h);
            }
            loaded
        }
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        unsafe { libc::close(self.fd) };
    }
}

fn fail(reason: String) -> EnvError {
    EnvError::Failed { env: "nethack".into(), reason }
}

/// A loaded copy's entry points. Unloaded on drop.
pub struct Loaded {
    handle: *mut c_void,
    pub start: ffi::StartFn,
    pub step: ffi::StepFn,
    pub end: ffi::EndFn,
    pub exit_windows: ffi::ExitWindowsFn,
    pristine: Pristine,
}

impl Loaded {
    /// Puts every global of the copy back as it was right after loading. Only between games:
    /// after `nle_end` (which frees the game's heap), before the next `nle_start`.
    pub fn restore(&mut self) {
        self.pristine.restore();
    }
}

/// Offsets `(start, end)` from the load address of the parts of writable `PT_LOAD` segments
/// that stay writable after loading: the loader write-protects the `PT_GNU_RELRO` pages
/// (relocated pointers, which never change afterwards anyway).
fn writable_ranges(elf: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    const PT_LOAD: u32 = 1;
    const PT_GNU_RELRO: u32 = 0x6474_e552;
    const PF_W: u32 = 2;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes(b.try_into().unwrap()) as usize);
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return Err("not a 64-bit ELF file".into());
    }
    let (phoff, phentsize, phnum) =
        (u64_at(0x20).ok_or("truncated")?, u16_at(0x36).ok_or("truncated")?, u16_at(0x38).ok_or("truncated")?);
    let (mut loads, mut relro_end) = (Vec::new(), 0);
    for i in 0..phnum {
        let h = phoff + i * phentsize;
        let (kind, flags) = (u32_at(h).ok_or("truncated")?, u32_at(h + 4).ok_or("truncated")?);
        let (vaddr, memsz) = (u64_at(h + 0x10).ok_or("truncated")?, u64_at(h + 0x28).ok_or("truncated")?);
        if kind == PT_LOAD && flags & PF_W != 0 {
            loads.push((vaddr, vaddr + memsz));
        } else if kind == PT_GNU_RELRO {
            // the loader protects whole pages up to the end of RELRO rounded down
            relro_end = (vaddr + memsz) & !(PAGE - 1);
        }
    }
    let ranges: Vec<_> = loads.into_iter().map(|(a, b)| (a.max(relro_end), b)).filter(|(a, b)| a < b).collect();
    if ranges.is_empty() {
        return Err("no writable segment".into());
    }
    Ok(ranges)
}

const PAGE: usize = 4096;

/// The writable memory of a loaded copy as it was right after loading (constructors run, no
/// game started).
struct Pristine {
    saved: Vec<(*mut u8, Vec<u8>)>,
}

impl Pristine {
    /// SAFETY: `handle` is a live `dlopen` handle of the ELF whose ranges these are.
    unsafe fn save(handle: *mut c_void, ranges: &[(usize, usize)]) -> Result<Pristine, EnvError> {
        #[repr(C)]
        struct LinkMap {
            l_addr: usize,
        }
        let mut map: *const LinkMap = std::ptr::null();
        if libc::dlinfo(handle, libc::RTLD_DI_LINKMAP, &mut map as *mut _ as *mut c_void) != 0 || map.is_null() {
            return Err(fail(format!("dlinfo: {}", dl_error())));
        }
        let base = (*map).l_addr;
        let saved = ranges
            .iter()
            .map(|&(a, b)| {
                let p = (base + a) as *mut u8;
                (p, std::slice::from_raw_parts(p, b - a).to_vec())
            })
            .collect();
        Ok(Pristine { saved })
    }

    fn restore(&mut self) {
        for (p, bytes) in &self.saved {
            // SAFETY: the ranges are this loaded copy's writable data, which lives as long as
            // the handle that owns `self`; no game runs while it is rewritten.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), *p, bytes.len()) };
        }
    }
}

// The copy is private to one env and used by one thread at a time.
unsafe impl Send for Loaded {}

impl Drop for Loaded {
    fn drop(&mut self) {
        unsafe { libc::dlclose(self.handle) };
    }
}
