//! The quick mode on SQLite, every workload that needs no Redis: each run
//! must verify.

use safesync_bench::{Backend, Config, Workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quick_sqlite_runs_all_verify() {
    let config = Config {
        quick: true,
        backends: vec![Backend::Sqlite],
        workloads: Workload::ALL
            .iter()
            .copied()
            .filter(|w| !w.is_queue())
            .collect(),
        ..Config::default()
    };
    let results = safesync_bench::run(&config).await;
    println!("{}", safesync_bench::summary_table(&results));
    // W0 (raw, raw-ledger), W1, W2, W3 (2 cases x 2 variants each), W4 (2), at workers 1 and 8.
    assert_eq!(results.len(), (2 + 4 + 4 + 4 + 2) * 2);
    for r in &results {
        assert!(r.verified, "not verified: {}", r.to_json());
        assert!(r.ops > 0 && r.ops_per_s > 0.0, "{}", r.to_json());
    }
    let framework = results.iter().filter(|r| r.variant == "framework");
    for r in framework {
        assert!(r.ratio_to_raw.is_some(), "no ratio: {}", r.to_json());
    }
}

/// The outbox workload (needs Redis) in quick mode on every backend, at
/// two producers and few transactions: each variant verifies (every
/// message handled once, every row relayed) and reports its commit-to-
/// handler latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quick_outbox_runs_verify_on_every_backend() {
    let config = Config {
        quick: true,
        backends: Backend::ALL.to_vec(),
        workloads: vec![Workload::Outbox],
        workers: vec![2],
        ops: Some(100),
        print: false,
        ..Config::default()
    };
    let results = safesync_bench::run(&config).await;
    println!("{}", safesync_bench::summary_table(&results));
    // raw, framework, framework-outbox on three backends.
    assert_eq!(results.len(), 3 * 3);
    for r in &results {
        assert!(r.verified, "not verified: {}", r.to_json());
        assert!(r.ops == 100 && r.p50_ms.is_some(), "{}", r.to_json());
    }
}
