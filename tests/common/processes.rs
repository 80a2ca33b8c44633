//! Tests that run real OS processes: the parent re-executes this test
//! binary, filtered to one child test that does nothing unless its
//! environment variable is set.

use std::time::Duration;

use super::Backend;

/// Runs `count` copies of this test binary, each running only the test
/// named `child` with `env` set to `backend|namespace|name`; waits up to
/// `limit` for all of them and fails with the output of one that failed.
pub async fn run(child: &str, env: &str, spec: [&str; 3], count: usize, limit: Duration) {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..count)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .args(["--exact", child, "--nocapture", "--test-threads", "1"])
                .env(env, spec.join("|"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = tokio::time::timeout(limit, c.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "a child process failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// In a child: the backend, namespace and name its parent passed in `env`,
/// and a runtime to run on; `None` when this is no child (`env` unset).
pub fn child(env: &str) -> Option<(Backend, String, String, tokio::runtime::Runtime)> {
    let spec = std::env::var(env).ok()?;
    let mut parts = spec.split('|');
    let (backend, namespace, name) = (
        Backend::from_name(parts.next().unwrap()),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .unwrap();
    Some((backend, namespace, name, rt))
}
