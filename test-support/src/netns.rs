//! A second host on this machine: a network namespace joined by a veth pair.

use std::process::{Command, Stdio};

/// A network namespace joined to this one by a veth pair, this side `host`, the namespace's
/// `peer`; `cut` drops traffic between them (all of it, or to some of `host`'s ports) without
/// a word to either side, as a failed switch does. Needs root, as CI has. Removed when dropped.
pub struct Netns {
    pub name: String,
    pub host: String,
    pub peer: String,
    veth: String,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip (iproute2)");
    assert!(st.success(), "ip {} failed (these tests run as root)", args.join(" "));
}

impl Netns {
    /// A namespace on its own /24 (`tag` tells apart those of one test process).
    pub fn new(tag: u8) -> Netns {
        let pid = std::process::id();
        let name = format!("oni-{pid}-{tag}");
        let (veth, inner) = (format!("oh{}x{tag}", pid % 1_000_000), format!("on{}x{tag}", pid % 1_000_000));
        let net = format!("10.{}.{tag}", 100 + pid % 100);
        let (host, peer) = (format!("{net}.1"), format!("{net}.2"));
        ip(&["netns", "add", &name]);
        let ns = Netns { name, host, peer, veth };
        ip(&["link", "add", &ns.veth, "type", "veth", "peer", "name", &inner]);
        ip(&["link", "set", &inner, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{}/24", ns.host), "dev", &ns.veth]);
        ip(&["link", "set", &ns.veth, "up"]);
        ip(&["netns", "exec", &ns.name, "ip", "addr", "add", &format!("{}/24", ns.peer), "dev", &inner]);
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", &inner, "up"]);
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    fn iptables(&self, args: &[&str]) {
        let st = self.command("iptables").args(args).status().expect("iptables");
        assert!(st.success(), "iptables {} failed", args.join(" "));
    }

    /// Drops every packet between the two sides (`ports` empty), or those to and from these
    /// ports of `host`.
    pub fn cut(&self, ports: &[u16]) {
        if ports.is_empty() {
            self.iptables(&["-A", "OUTPUT", "-d", &self.host, "-j", "DROP"]);
            self.iptables(&["-A", "INPUT", "-s", &self.host, "-j", "DROP"]);
        }
        for p in ports.iter().map(u16::to_string) {
            self.iptables(&["-A", "OUTPUT", "-p", "tcp", "-d", &self.host, "--dport", &p, "-j", "DROP"]);
            self.iptables(&["-A", "INPUT", "-p", "tcp", "-s", &self.host, "--sport", &p, "-j", "DROP"]);
        }
    }

    /// Lets all traffic through again.
    pub fn heal(&self) {
        self.iptables(&["-F", "OUTPUT"]);
        self.iptables(&["-F", "INPUT"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = Command::new("ip").args(["link", "del", &self.veth]).stderr(Stdio::null()).status();
    }
}
