//! A private Redis Cluster: 3 masters and 3 replicas on free loopback
//! ports, each `redis-server` in a temporary directory of its own, joined
//! by `redis-cli --cluster create`; every process is killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to form, or to fail over.
const LIMIT: Duration = Duration::from_secs(60);

pub struct Cluster {
    pub ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
    _dirs: Vec<tempfile::TempDir>,
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_port(taken: &[u16]) -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port > 55_000 || taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// `redis-cli -p port <args>`'s output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed (scripts/services installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number `field` in `INFO <section>` of node `port`.
pub fn info_number(port: u16, section: &str, field: &str) -> u64 {
    let info = cli(port, &["INFO", section]);
    info.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO {section} of {port}: {info}"))
        .parse()
        .unwrap()
}

/// How many `CLIENT UNBLOCK`s node `port` ran since its last
/// `CONFIG RESETSTAT` (`INFO commandstats`).
pub fn unblock_calls(port: u16) -> u64 {
    cli(port, &["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("cmdstat_client|unblock:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

impl Cluster {
    pub fn start() -> Cluster {
        let mut ports = Vec::new();
        for _ in 0..6 {
            ports.push(free_port(&ports));
        }
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for &port in &ports {
            let dir = tempfile::tempdir().unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(dir.path().join("nodes.conf"))
                .args(["--cluster-node-timeout", "1000"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/services installs it)");
            nodes.push(Some(child));
            dirs.push(dir);
        }
        let cluster = Cluster {
            ports,
            nodes,
            _dirs: dirs,
        };
        let start = Instant::now();
        for &port in &cluster.ports {
            while cli(port, &["PING"]).trim() != "PONG" {
                assert!(
                    start.elapsed() < LIMIT,
                    "redis-server on {port} did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_healthy();
        cluster
    }

    /// The seed URLs: every node's.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    pub fn redis(&self) -> safesync::queue::Redis {
        safesync::queue::cluster(&self.urls()).unwrap()
    }

    fn alive(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .zip(&self.nodes)
            .filter(|(_, n)| n.is_some())
            .map(|(p, _)| *p)
    }

    /// Waits until every live node says `cluster_state:ok` with every slot
    /// served, knows the others, and every replica's link to its master is
    /// up.
    pub fn wait_healthy(&self) {
        let start = Instant::now();
        let live = self.alive().count();
        loop {
            let ok = self.alive().all(|port| {
                let info = cli(port, &["CLUSTER", "INFO"]);
                let repl = cli(port, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains("cluster_slots_fail:0")
                    && info.contains("cluster_slots_pfail:0")
                    && (!repl.contains("role:slave") || repl.contains("master_link_status:up"))
            }) && self.masters().len() == 3
                && self.alive().all(|port| {
                    // Every node sees the same masters.
                    let mut seen = masters_seen_by(port);
                    seen.sort_unstable();
                    let mut mine = self.masters();
                    mine.sort_unstable();
                    seen == mine
                });
            if ok {
                return;
            }
            assert!(
                start.elapsed() < LIMIT,
                "the cluster ({live} live nodes) is not healthy after {LIMIT:?}: {}",
                cli(self.alive().next().unwrap(), &["CLUSTER", "NODES"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ports of the live masters, as a live node sees them.
    pub fn masters(&self) -> Vec<u16> {
        let Some(port) = self.alive().next() else {
            return Vec::new();
        };
        masters_seen_by(port)
            .into_iter()
            .filter(|p| self.alive().any(|a| a == *p))
            .collect()
    }

    /// The port of the master serving `key`'s slot, as a live node sees it.
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.alive().next().unwrap();
        let slot: u16 = cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        for line in cli(port, &["CLUSTER", "NODES"]).lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let served = f[8..].iter().any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                match (a.parse::<u16>(), b.parse::<u16>()) {
                    (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            if served {
                return node_port(f[1]);
            }
        }
        panic!("no master serves slot {slot} of `{key}`");
    }

    /// `count` names `<prefix>_<n>` whose slots are spread over the
    /// masters in turn: names 0, 3, … on one master, 1, 4, … on the next.
    pub fn names_on_masters(&self, prefix: &str, count: usize) -> Vec<String> {
        let masters = self.masters();
        let mut out = Vec::new();
        let mut n = 0;
        while out.len() < count {
            let want = masters[out.len() % masters.len()];
            let name = format!("{prefix}_{n}");
            n += 1;
            if self.master_of(&name) == want {
                out.push(name);
            }
        }
        out
    }

    /// SIGKILL to the node on `port`: no shutdown, no last write.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut child) = self.nodes[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Waits until a replica took over every slot of the killed masters.
    pub fn wait_failover(&self) {
        let start = Instant::now();
        loop {
            let port = self.alive().next().unwrap();
            let info = cli(port, &["CLUSTER", "INFO"]);
            if info.contains("cluster_state:ok") && self.masters().len() == 3 {
                return;
            }
            assert!(
                start.elapsed() < LIMIT,
                "no failover after {LIMIT:?}: {}",
                cli(port, &["CLUSTER", "NODES"])
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The masters (not failed) that node `port` lists in `CLUSTER NODES`.
fn masters_seen_by(port: u16) -> Vec<u16> {
    cli(port, &["CLUSTER", "NODES"])
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (f.len() >= 9 && f[2].contains("master") && !f[2].contains("fail"))
                .then(|| node_port(f[1]))
        })
        .collect()
}

/// The port of `127.0.0.1:7000@17000`.
fn node_port(addr: &str) -> u16 {
    let host_port = addr.split('@').next().unwrap();
    host_port.rsplit(':').next().unwrap().parse().unwrap()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
