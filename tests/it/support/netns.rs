//! Network namespaces the tests create themselves, for hosts that are only
//! reachable through other hosts (jump hosts).
//!
//! A `Lab` claims a /24 of 198.18.0.0/15 (RFC 2544's benchmarking range)
//! by adding an `unreachable` route for it in the root namespace *before*
//! any address of it is used: nothing in it can ever leave the machine,
//! and the route add is atomic, so two test processes (or two agents) can
//! never claim the same block. Namespace and veth names carry this
//! process's pid and the block; everything is torn down on drop, even when
//! the test panics. Blocks, namespaces and `/etc/netns` entries left by a
//! test process that was killed are swept, by their owner's pid, the next
//! time a lab is made: never anything of a process that still runs.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); without it the test
//! fails with a message saying so.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where blocks record their owner's pid, for the sweep. The (empty)
/// directory stays: removing it could race another process's claim.
const OWNERS: &str = "/run/hostscan-test-nets";
/// 198.18.0.0/15 holds 512 /24 blocks.
const BLOCKS: usize = 512;

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn must(args: &[&str]) -> String {
    ip(args).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")))
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Fails the test unless we may create namespaces.
fn require_root() {
    assert!(
        super::is_root(),
        "this test needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces, \
         veth pairs and routes: run `cargo test` as root (CI does)"
    );
}

/// The /24 of a block index: 198.18.0.0/24 … 198.19.255.0/24.
fn block_prefix(index: usize) -> String {
    format!("198.{}.{}", 18 + index / 256, index % 256)
}

/// Removes what test processes that no longer run left behind.
fn sweep() {
    let Ok(entries) = std::fs::read_dir(OWNERS) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(index) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let owner = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if let Some(pid) = owner
            && !pid_alive(pid)
        {
            let _ = ip(&[
                "route",
                "del",
                "unreachable",
                &format!("{}.0/24", block_prefix(index)),
            ]);
            let _ = std::fs::remove_file(&path);
        }
    }
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let pid = name
                .strip_prefix("hs")
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !pid_alive(pid)
            {
                let _ = ip(&["netns", "del", name]);
                let _ = std::fs::remove_dir_all(format!("/etc/netns/{name}"));
            }
        }
    }
}

/// A private network of namespaces. Dropping it removes everything it made.
pub struct Lab {
    index: usize,
    prefix: String,
    /// Namespaces made, by full name.
    namespaces: Vec<String>,
    /// Root-side veth names.
    veths: Vec<String>,
    /// /30 subnets handed out.
    links: usize,
    etc: Vec<PathBuf>,
    tag: String,
}

static SWEPT: OnceLock<()> = OnceLock::new();
static LABS: AtomicUsize = AtomicUsize::new(0);

impl Lab {
    /// Claims a free /24 (its `unreachable` route first) for this lab.
    pub fn new() -> Self {
        require_root();
        SWEPT.get_or_init(sweep);
        std::fs::create_dir_all(OWNERS).expect("owner dir");
        let pid = std::process::id();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let start = (pid as usize * 7 + n * 31) % BLOCKS;
        for step in 0..BLOCKS {
            let index = (start + step) % BLOCKS;
            let prefix = block_prefix(index);
            match ip(&["route", "add", "unreachable", &format!("{prefix}.0/24")]) {
                Ok(_) => {
                    std::fs::write(format!("{OWNERS}/{index}"), pid.to_string())
                        .expect("owner file");
                    return Self {
                        index,
                        prefix,
                        namespaces: Vec::new(),
                        veths: Vec::new(),
                        links: 0,
                        etc: Vec::new(),
                        tag: format!("hs{pid}-{n}"),
                    };
                }
                Err(e) if e.contains("File exists") => continue,
                Err(e) => panic!(
                    "cannot add an unreachable route for {prefix}.0/24: {e} \
                     (this test needs root / CAP_NET_ADMIN)"
                ),
            }
        }
        panic!("no free /24 left in 198.18.0.0/15 for a test network");
    }

    /// A new namespace with loopback up; returns its full name.
    pub fn namespace(&mut self, name: &str) -> String {
        let full = format!("{}-{name}", self.tag);
        must(&["netns", "add", &full]);
        self.namespaces.push(full.clone());
        must(&["-n", &full, "link", "set", "lo", "up"]);
        full
    }

    /// The next /30: (network .0, first host, second host).
    fn subnet(&mut self) -> (String, String) {
        let k = self.links;
        self.links += 1;
        assert!(k < 64, "a lab has at most 64 links");
        (
            format!("{}.{}", self.prefix, 4 * k + 1),
            format!("{}.{}", self.prefix, 4 * k + 2),
        )
    }

    /// An address of this lab's block that no link uses (`.240`-`.254`),
    /// for a test's own interfaces inside a namespace.
    pub fn spare_address(&self, index: u8) -> String {
        assert!(
            index < 15 && self.links < 60,
            "spare addresses are .240-.254"
        );
        format!("{}.{}", self.prefix, 240 + index)
    }

    /// Connects the root namespace to `ns`: (root's address, ns's address).
    pub fn link_root(&mut self, ns: &str) -> (String, String) {
        let (a, b) = self.subnet();
        let veth = format!("hv{}x{}", self.index, self.links);
        must(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        self.veths.push(veth.clone());
        must(&["addr", "add", &format!("{a}/30"), "dev", &veth]);
        must(&["link", "set", &veth, "up"]);
        must(&["-n", ns, "addr", "add", &format!("{b}/30"), "dev", "eth0"]);
        must(&["-n", ns, "link", "set", "eth0", "up"]);
        (a, b)
    }

    /// Connects two namespaces: (`a`'s address, `b`'s address).
    pub fn link(&mut self, a: &str, b: &str) -> (String, String) {
        let (x, y) = self.subnet();
        let (ia, ib) = (format!("l{}a", self.links), format!("l{}b", self.links));
        must(&[
            "-n", a, "link", "add", &ia, "type", "veth", "peer", "name", &ib, "netns", b,
        ]);
        must(&["-n", a, "addr", "add", &format!("{x}/30"), "dev", &ia]);
        must(&["-n", a, "link", "set", &ia, "up"]);
        must(&["-n", b, "addr", "add", &format!("{y}/30"), "dev", &ib]);
        must(&["-n", b, "link", "set", &ib, "up"]);
        (x, y)
    }

    /// Gives `ns` its own /etc/resolv.conf (bind-mounted by `ip netns exec`).
    pub fn resolv_conf(&mut self, ns: &str, text: &str) {
        let dir = PathBuf::from(format!("/etc/netns/{ns}"));
        std::fs::create_dir_all(&dir).expect("/etc/netns dir");
        std::fs::write(dir.join("resolv.conf"), text).expect("resolv.conf");
        self.etc.push(dir);
    }

    /// A command run inside `ns`.
    pub fn command(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Established TCP connections to port 22 inside `ns`.
    pub fn ssh_connections(ns: &str) -> usize {
        let out = must(&[
            "netns",
            "exec",
            ns,
            "ss",
            "-Htn",
            "state",
            "established",
            "( sport = :22 )",
        ]);
        out.lines().filter(|l| !l.trim().is_empty()).count()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        for veth in &self.veths {
            // Usually gone with its peer's namespace.
            let _ = ip(&["link", "del", veth]);
        }
        for dir in &self.etc {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = ip(&[
            "route",
            "del",
            "unreachable",
            &format!("{}.0/24", self.prefix),
        ]);
        let _ = std::fs::remove_file(format!("{OWNERS}/{}", self.index));
    }
}
