//! Results: one JSON line per run, and the summary table.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// The outcome of one run: one workload, variant, backend and worker count.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// `w0-commit`, `w1-hot`, `w1-spread`, `w2-hot`, `w2-spread`,
    /// `w3-advisory`, `w3-uncontended`, `w4-idempotent`, `w5-queue`,
    /// `w5q-queue-only`.
    pub workload: String,
    /// `framework`, `framework-noledger` (W5 with the ledger off),
    /// `framework-16-per-tx` (W5, 16 messages per transaction),
    /// `raw`, `raw-simple` (W5 baseline 1) or `raw-tuned` (W5 baseline 2).
    pub variant: String,
    /// `sqlite`, `mysql` or `postgres`.
    pub backend: String,
    /// Worker tasks.
    pub workers: usize,
    /// Operations (or messages) done and verified.
    pub ops: u64,
    /// Operations the run was asked for.
    pub target_ops: u64,
    /// Wall-clock seconds of the measured part.
    pub seconds: f64,
    /// `ops / seconds`.
    pub ops_per_s: f64,
    /// Extra attempts per committed operation, for the workloads that
    /// retry (W1).
    pub retries_per_commit: Option<f64>,
    /// CPU time this process (all threads, user + system, 10 ms ticks)
    /// spent per operation during the run: the client side's cost, which
    /// the database's drifting latencies do not blur. On SQLite it includes
    /// the database engine, which runs inside the process.
    pub client_cpu_us_per_op: Option<f64>,
    /// Median latency of one operation, where one is measured (W0–W4).
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency of one operation.
    pub p99_ms: Option<f64>,
    /// Whether the result was checked and held; `false` also for a run
    /// that failed.
    pub verified: bool,
    /// The time limit ended the run before its count.
    pub truncated: bool,
    /// Framework ops/s divided by the raw baseline's (`raw`, or `raw-tuned`
    /// for W5/W5q) of the same process run.
    pub ratio_to_raw: Option<f64>,
    /// W5: framework ops/s divided by the straightforward raw loop's.
    pub ratio_to_raw_simple: Option<f64>,
    /// W5: framework msgs/s divided by W0's commits/s (the database's own
    /// rate of one-row transactions) at the same backend and workers, when
    /// W0 ran earlier in the same process run.
    pub ratio_to_w0: Option<f64>,
    /// W5: framework msgs/s divided by W0 `raw-ledger`'s commits/s (W0's
    /// transaction with a ledger row: one transaction per message with
    /// exactly-once bookkeeping, without Redis), when it ran earlier in
    /// the same process run.
    pub ratio_to_w0_ledger: Option<f64>,
    /// With `--rss` (W5/W5q framework): the peak resident memory in MiB
    /// after the checkpoint's messages, and how many were handled then.
    pub peak_rss_mib_checkpoint: Option<(u64, f64)>,
    /// With `--rss`: the peak resident memory in MiB over the whole run.
    pub peak_rss_mib: Option<f64>,
    /// What was verified, or why the run failed.
    pub detail: String,
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

fn num(x: Option<f64>, places: i32) -> Value {
    x.filter(|v| v.is_finite())
        .map_or(Value::Null, |v| json!(round(v, places)))
}

impl RunResult {
    /// The run as one line of JSON.
    pub fn to_json(&self) -> String {
        json!({
            "workload": self.workload,
            "variant": self.variant,
            "backend": self.backend,
            "workers": self.workers,
            "ops": self.ops,
            "target_ops": self.target_ops,
            "seconds": round(self.seconds, 3),
            "ops_per_s": round(self.ops_per_s, 1),
            "retries_per_commit": num(self.retries_per_commit, 3),
            "client_cpu_us_per_op": num(self.client_cpu_us_per_op, 1),
            "p50_ms": num(self.p50_ms, 3),
            "p99_ms": num(self.p99_ms, 3),
            "verified": self.verified,
            "truncated": self.truncated,
            "ratio_to_raw": num(self.ratio_to_raw, 3),
            "ratio_to_raw_simple": num(self.ratio_to_raw_simple, 3),
            "ratio_to_w0": num(self.ratio_to_w0, 3),
            "ratio_to_w0_ledger": num(self.ratio_to_w0_ledger, 3),
            "rss_checkpoint_msgs": self.peak_rss_mib_checkpoint.map(|(n, _)| n),
            "peak_rss_mib_at_checkpoint": num(self.peak_rss_mib_checkpoint.map(|(_, m)| m), 1),
            "peak_rss_mib": num(self.peak_rss_mib, 1),
            "detail": self.detail,
        })
        .to_string()
    }

    /// True for the framework's variants.
    fn is_framework(&self) -> bool {
        self.variant.starts_with("framework")
    }
}

/// The raw variant a framework figure is divided by: the hand-tuned loop
/// for the queue workloads, the one raw baseline elsewhere.
fn reference_of(workload: &str) -> &'static str {
    if workload.starts_with("w5") {
        "raw-tuned"
    } else {
        "raw"
    }
}

/// Mean ops/s of the verified runs of `variant` in `raw`.
fn mean_of(raw: &[RunResult], variant: &str) -> Option<f64> {
    let speeds: Vec<f64> = raw
        .iter()
        .filter(|r| r.variant == variant && r.verified && r.ops_per_s > 0.0)
        .map(|r| r.ops_per_s)
        .collect();
    #[allow(clippy::cast_precision_loss)] // reason: a handful of rounds
    let n = speeds.len() as f64;
    (!speeds.is_empty()).then(|| speeds.iter().sum::<f64>() / n)
}

/// W5 framework: sets the ratio to W0's mean rate at the same backend and
/// workers among `earlier` results.
pub(crate) fn add_w0_ratio(result: &mut RunResult, earlier: &[RunResult]) {
    if !result.is_framework() || !result.verified || result.workload != "w5-queue" {
        return;
    }
    let w0: Vec<RunResult> = earlier
        .iter()
        .filter(|r| {
            r.workload == "w0-commit" && r.backend == result.backend && r.workers == result.workers
        })
        .cloned()
        .collect();
    result.ratio_to_w0 = mean_of(&w0, "raw").map(|r| result.ops_per_s / r);
    result.ratio_to_w0_ledger = mean_of(&w0, "raw-ledger").map(|r| result.ops_per_s / r);
}

/// Sets a framework result's ratios against the raw runs of its group
/// (same workload, backend and workers, same process run): its ops/s
/// divided by the mean of theirs.
pub(crate) fn add_ratios(result: &mut RunResult, raw: &[RunResult]) {
    if !result.is_framework() || !result.verified {
        return;
    }
    let reference = reference_of(&result.workload);
    result.ratio_to_raw = mean_of(raw, reference).map(|r| result.ops_per_s / r);
    if reference == "raw-tuned" {
        result.ratio_to_raw_simple = mean_of(raw, "raw-simple").map(|r| result.ops_per_s / r);
    }
}

fn opt(x: Option<f64>, places: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{v:.places$}"))
}

/// The results as an aligned text table, then a line counting failures.
pub fn summary_table(results: &[RunResult]) -> String {
    let header = [
        "workload",
        "backend",
        "workers",
        "variant",
        "ops",
        "secs",
        "ops/s",
        "retry/c",
        "cpu us/op",
        "p50 ms",
        "p99 ms",
        "verified",
        "ratio",
    ];
    let rows: Vec<[String; 13]> = results
        .iter()
        .map(|r| {
            [
                r.workload.clone(),
                r.backend.clone(),
                r.workers.to_string(),
                r.variant.clone(),
                if r.truncated {
                    format!("{}*", r.ops)
                } else {
                    r.ops.to_string()
                },
                format!("{:.2}", r.seconds),
                format!("{:.0}", r.ops_per_s),
                opt(r.retries_per_commit, 2),
                opt(r.client_cpu_us_per_op, 0),
                opt(r.p50_ms, 2),
                opt(r.p99_ms, 2),
                if r.verified { "yes" } else { "FAILED" }.to_owned(),
                opt(r.ratio_to_raw, 3),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            // Text left, numbers right.
            if i == 0 || i == 1 || i == 3 || i == 11 {
                let _ = write!(out, "{cell:<w$}  ");
            } else {
                let _ = write!(out, "{cell:>w$}  ");
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(&mut out, &header);
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    line(
        &mut out,
        &rule.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for row in &rows {
        line(
            &mut out,
            &row.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    medians(results, &mut out);
    queue_ratios(results, &mut out);
    memory(results, &mut out);
    let failed = results.iter().filter(|r| !r.verified).count();
    if results.iter().any(|r| r.truncated) {
        out.push_str("* the time limit (--max-seconds) ended the run before its count\n");
    }
    if failed == 0 {
        let _ = writeln!(out, "all {} runs verified", results.len());
    } else {
        let _ = writeln!(out, "{failed} of {} runs FAILED:", results.len());
        for r in results.iter().filter(|r| !r.verified) {
            let _ = writeln!(
                out,
                "  {} {} {} workers={}: {}",
                r.workload, r.variant, r.backend, r.workers, r.detail
            );
        }
    }
    out
}

/// W5's framework runs against the straightforward raw loop and against
/// W0: the median of each run's ratio, per backend, workers and variant.
fn queue_ratios(results: &[RunResult], out: &mut String) {
    let mut keys: Vec<(&str, usize, &str)> = Vec::new();
    for r in results {
        let k = (r.backend.as_str(), r.workers, r.variant.as_str());
        if r.workload == "w5-queue" && r.is_framework() && !keys.contains(&k) {
            keys.push(k);
        }
    }
    if keys.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nW5 framework: median per-run ratio to raw-simple (target >= 3 at 1 worker), to W0 (target >= 0.9) and to W0 raw-ledger"
    );
    for (backend, workers, variant) in keys {
        let runs: Vec<&RunResult> = results
            .iter()
            .filter(|r| {
                r.workload == "w5-queue"
                    && r.backend == backend
                    && r.workers == workers
                    && r.variant == variant
                    && r.verified
            })
            .collect();
        let med = |f: fn(&RunResult) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
            (!v.is_empty()).then(|| median(v))
        };
        let _ = writeln!(
            out,
            "  {backend:<9} workers={workers:<3} {variant:<22} x raw-simple {:>6}   x W0 {:>6}   x W0 raw-ledger {:>6}",
            opt(med(|r| r.ratio_to_raw_simple), 2),
            opt(med(|r| r.ratio_to_w0), 2),
            opt(med(|r| r.ratio_to_w0_ledger), 2),
        );
    }
}

/// With `--rss`: the peak RSS at the checkpoint and at the end, and the
/// growth between them.
fn memory(results: &[RunResult], out: &mut String) {
    for r in results {
        let Some(end) = r.peak_rss_mib else { continue };
        let _ = write!(
            out,
            "peak RSS {} {} {} workers={}: ",
            r.workload, r.backend, r.variant, r.workers
        );
        match r.peak_rss_mib_checkpoint {
            Some((n, at)) => {
                let _ = writeln!(
                    out,
                    "{at:.1} MiB after {n} messages, {end:.1} MiB after {} ({:+.1} %)",
                    r.ops,
                    (end / at - 1.0) * 100.0
                );
            }
            None => {
                let _ = writeln!(out, "{end:.1} MiB after {} (no checkpoint reached)", r.ops);
            }
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        f64::midpoint(xs[n / 2 - 1], xs[n / 2])
    }
}

/// With several rounds: per workload, backend, workers and variant, the
/// median ops/s of the verified runs, their spread, the median client CPU
/// per operation, and the framework's medians divided by the reference raw
/// medians.
fn medians(results: &[RunResult], out: &mut String) {
    type Key<'a> = (&'a str, &'a str, usize, &'a str);
    fn key(r: &RunResult) -> Key<'_> {
        (
            r.workload.as_str(),
            r.backend.as_str(),
            r.workers,
            r.variant.as_str(),
        )
    }
    let mut keys: Vec<Key<'_>> = Vec::new();
    for r in results {
        if !keys.contains(&key(r)) {
            keys.push(key(r));
        }
    }
    let runs = |k: &Key<'_>| -> Vec<&RunResult> {
        results
            .iter()
            .filter(|r| key(r) == *k && r.verified)
            .collect()
    };
    let speed = |rs: &[&RunResult]| median(rs.iter().map(|r| r.ops_per_s).collect());
    let cpu = |rs: &[&RunResult]| {
        let v: Vec<f64> = rs.iter().filter_map(|r| r.client_cpu_us_per_op).collect();
        (!v.is_empty()).then(|| median(v))
    };
    if keys.iter().all(|k| runs(k).len() <= 1) {
        return;
    }
    let _ = writeln!(
        out,
        "\nmedians over rounds (ratio = framework / {{raw or raw-tuned}}: ops/s, and client CPU per op)"
    );
    let _ = writeln!(
        out,
        "{:<15} {:<9} {:>7}  {:<19} {:>4} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9}",
        "workload",
        "backend",
        "workers",
        "variant",
        "runs",
        "median/s",
        "min/s",
        "max/s",
        "ratio",
        "cpu us/op",
        "cpu ratio"
    );
    for k in &keys {
        let rs = runs(k);
        if rs.is_empty() {
            continue;
        }
        let (min, max) = rs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| {
            (lo.min(r.ops_per_s), hi.max(r.ops_per_s))
        });
        let (med, med_cpu) = (speed(&rs), cpu(&rs));
        let (ratio, cpu_ratio) = if k.3.starts_with("framework") {
            let raw = runs(&(k.0, k.1, k.2, reference_of(k.0)));
            if raw.is_empty() {
                (None, None)
            } else {
                let cpu_ratio = med_cpu.zip(cpu(&raw)).map(|(f, r)| f / r);
                (Some(med / speed(&raw)), cpu_ratio)
            }
        } else {
            (None, None)
        };
        let _ = writeln!(
            out,
            "{:<15} {:<9} {:>7}  {:<19} {:>4} {:>9.0} {:>9.0} {:>9.0} {:>7} {:>9} {:>9}",
            k.0,
            k.1,
            k.2,
            k.3,
            rs.len(),
            med,
            min,
            max,
            opt(ratio, 3),
            opt(med_cpu, 1),
            opt(cpu_ratio, 3)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{RunResult, add_ratios, add_w0_ratio, summary_table};

    fn result(variant: &str, ops_per_s: f64) -> RunResult {
        RunResult {
            workload: "w1-hot".into(),
            variant: variant.into(),
            backend: "sqlite".into(),
            workers: 1,
            ops: 10,
            target_ops: 10,
            seconds: 1.0,
            ops_per_s,
            retries_per_commit: Some(0.0),
            client_cpu_us_per_op: Some(50.0),
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            verified: true,
            truncated: false,
            ratio_to_raw: None,
            ratio_to_raw_simple: None,
            ratio_to_w0: None,
            ratio_to_w0_ledger: None,
            peak_rss_mib_checkpoint: None,
            peak_rss_mib: None,
            detail: String::new(),
        }
    }

    #[test]
    fn ratio_is_framework_over_the_mean_raw() {
        let raw = [result("raw", 100.0), result("raw", 300.0)];
        let mut fw = result("framework", 150.0);
        add_ratios(&mut fw, &raw);
        assert_eq!(fw.ratio_to_raw, Some(0.75));
        let line: serde_json::Value = serde_json::from_str(&fw.to_json()).unwrap();
        assert_eq!(line["ratio_to_raw"], 0.75);
        assert_eq!(line["verified"], true);
    }

    #[test]
    fn w5_is_divided_by_w0_and_by_w0_with_its_ledger_row() {
        let mut w0 = [
            result("raw", 400.0),
            result("raw-ledger", 200.0),
            result("raw-ledger", 300.0),
        ];
        for r in &mut w0 {
            r.workload = "w0-commit".into();
        }
        let mut other_workers = result("raw", 1.0);
        other_workers.workload = "w0-commit".into();
        other_workers.workers = 8;
        let mut earlier = w0.to_vec();
        earlier.push(other_workers);
        let mut fw = result("framework", 200.0);
        fw.workload = "w5-queue".into();
        add_w0_ratio(&mut fw, &earlier);
        assert_eq!(fw.ratio_to_w0, Some(0.5));
        assert_eq!(fw.ratio_to_w0_ledger, Some(0.8));
        let line: serde_json::Value = serde_json::from_str(&fw.to_json()).unwrap();
        assert_eq!(line["ratio_to_w0_ledger"], 0.8);
    }

    #[test]
    fn failed_runs_are_listed() {
        let mut bad = result("raw", 1.0);
        bad.verified = false;
        bad.detail = "sum 9, expected 10".into();
        let table = summary_table(&[result("raw", 1.0), bad]);
        assert!(table.contains("FAILED"), "{table}");
        assert!(table.contains("sum 9, expected 10"), "{table}");
        assert!(!table.contains("medians"), "{table}");
    }

    #[test]
    fn rounds_get_medians() {
        let runs = [
            result("raw", 100.0),
            result("framework", 90.0),
            result("framework", 80.0),
            result("raw", 200.0),
            result("raw", 120.0),
            result("framework", 60.0),
        ];
        let table = summary_table(&runs);
        // framework median 80 / raw median 120
        assert!(table.contains("0.667"), "{table}");
    }
}
