//! What oni's integration tests start around the processes under test, in one place: the
//! real servers (llama-server with the test model, Redis), and the system fixtures the fault
//! tests need (a small tmpfs to fill, a network namespace to cut off). Each is stopped or
//! removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod netns;
pub use netns::Netns;

/// A server process killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The project cache (`ONI_CACHE`, else ~/.cache/oni): venv, llama-server, models.
pub fn oni_cache() -> PathBuf {
    std::env::var_os("ONI_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/oni"))
}

/// A port free on 127.0.0.1 at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits up to a minute for something to accept connections on `host:port`.
pub fn wait_listening_on(host: &str, port: u16, what: &str) {
    let t = Instant::now();
    while std::net::TcpStream::connect((host, port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(60), "{what} did not start on {host}:{port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True once `GET path` on 127.0.0.1:`port` answers 200.
fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

/// llama-server (built by scripts/llm-server.sh) with SmolLM2-135M-Instruct on
/// 127.0.0.1:`port`, once its model is loaded (`/health` answers 200).
pub fn llama_server(port: u16) -> Server {
    let cache = oni_cache();
    let (bin, model) = (cache.join("bin/llama-server"), cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(bin.exists() && model.exists(), "run scripts/llm-server.sh build && scripts/llm-server.sh model first");
    let child = Command::new(bin)
        .args(["-m", model.to_str().unwrap()])
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--parallel", "4", "-c", "4096"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("llama-server");
    let server = Server(child);
    let t = Instant::now();
    while !http_ok(port, "/health") {
        assert!(t.elapsed() < Duration::from_secs(90), "llama-server did not become healthy on {port}");
        std::thread::sleep(Duration::from_millis(250));
    }
    server
}

/// How a test's Redis keeps its data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Memory only.
    None,
    /// Every write appended and synced before it is acknowledged (survives a restart).
    Durable,
}

/// A throwaway redis-server (Debian's) on `host:port`, data in `dir`.
pub fn redis_server(host: &str, port: u16, dir: &Path, persistence: Persistence) -> Server {
    let aof: &[&str] = match persistence {
        Persistence::None => &["--appendonly", "no"],
        Persistence::Durable => &["--appendonly", "yes", "--appendfsync", "always"],
    };
    let child = Command::new("redis-server")
        // not only on loopback (a test's other host): protected mode would refuse it
        .args(["--port", &port.to_string(), "--bind", host, "--save", "", "--protected-mode", "no"])
        .args(aof)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/test.sh installs it)");
    wait_listening_on(host, port, "redis-server");
    Server(child)
}

/// A tmpfs of `size` (such as "48m") mounted at `path`, unmounted when dropped. Mounting
/// needs root, as CI has; the tests that fill a disk use one so as not to fill the machine's.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "oni-test"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(st.success(), "could not mount a tmpfs at {} (this test runs as root)", path.display());
        Tmpfs { path: path.to_path_buf() }
    }

    /// Writes a file until the file system has no room left; returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xa5u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[0xa5]).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
