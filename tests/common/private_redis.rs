//! A private `redis-server` for tests that count commands on the server
//! (`INFO commandstats`) or restart it: other tests' traffic never reaches it.

use std::time::{Duration, Instant};

/// A private `redis-server` on a free port, with an append-only file so its
/// data survives a restart.
pub struct PrivateRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<std::process::Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = PrivateRedis {
            port,
            dir: tempfile::tempdir().unwrap(),
            process: None,
        };
        r.up();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn up(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/services installs it)");
        self.process = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "private redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: Redis flushes its append-only file and exits.
    pub fn down(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &p.id().to_string()])
                .status();
            let _ = p.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}
