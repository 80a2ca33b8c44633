//! The command line.

use std::time::Duration;

use crate::{Backend, Config, Workload};

pub(crate) const USAGE: &str = "\
usage: safesync-bench [--backend sqlite|mysql|postgres|all] [--workload w0|w1|w2|w3|w4|w5|w5q|outbox|all]
                      [--workers 1,8] [--ops N] [--quick] [--max-seconds S] [--repeat R] [--rss]
                      [--variant NAME,...]

  --backend      backends, comma-separated (default: all)
  --workload     workloads, comma-separated (default: all)
  --workers      worker counts, tasks in this process (default: 1,8)
  --ops          operations (W0-W4) or messages (W5, W5q) or producer
                 transactions (outbox) per run
                 (default: 20000; W3 2000, W3 uncontended 1000, outbox 5000)
  --quick        small counts: everything in under two minutes
  --max-seconds  stop starting W0-W4 operations after S seconds per run and
                 verify what was done (default: 60; 0 = no limit)
  --repeat       run every variant R times, alternating the order; ratios
                 divide by the mean of the raw runs (default: 1)
  --variant      only these variants: raw, raw-ledger, raw-simple, raw-tuned, framework,
                 framework-noledger, framework-16-per-tx, framework-outbox
                 (default: all)
  --rss          W5/W5q framework runs report the peak RSS after
                 min(100000, M/10) messages and at the end, e.g.
                 --workload w5 --ops 1000000 --workers 32 --rss

environment: SAFESYNC_MYSQL_URL (mysql://safesync:safesync@127.0.0.1:3306/safesync),
             SAFESYNC_PG_URL (postgres://postgres@127.0.0.1:5432/test),
             SAFESYNC_REDIS_URL (redis://127.0.0.1:6379); SQLite uses a temporary file.";

fn list<T>(
    value: &str,
    all: &[T],
    one: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String>
where
    T: Copy + PartialEq,
{
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let items = if item == "all" {
            all.to_vec()
        } else {
            vec![one(item)?]
        };
        for i in items {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    if out.is_empty() {
        return Err(format!("`{value}` names nothing"));
    }
    Ok(out)
}

pub(crate) fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Config, String> {
    let mut config = Config::default();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (flag.clone(), None),
        };
        if name == "--help" || name == "-h" {
            return Err(USAGE.to_owned());
        }
        if name == "--quick" {
            config.quick = true;
            continue;
        }
        if name == "--rss" {
            config.rss = true;
            continue;
        }
        let Some(value) = inline.or_else(|| args.next()) else {
            return Err(format!("`{name}` needs a value\n\n{USAGE}"));
        };
        match name.as_str() {
            "--backend" => config.backends = list(&value, &Backend::ALL, str::parse)?,
            "--workload" => config.workloads = list(&value, &Workload::ALL, str::parse)?,
            "--workers" => {
                let mut workers = Vec::new();
                for w in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let n: usize = w
                        .parse()
                        .map_err(|_| format!("--workers takes counts like 1,8, not `{w}`"))?;
                    if n == 0 {
                        return Err("--workers: a count must be at least 1".to_owned());
                    }
                    workers.push(n);
                }
                if workers.is_empty() {
                    return Err("--workers names no count".to_owned());
                }
                config.workers = workers;
            }
            "--ops" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| format!("--ops takes a count, not `{value}`"))?;
                if n < 2 {
                    return Err("--ops must be at least 2".to_owned());
                }
                config.ops = Some(n);
            }
            "--max-seconds" => {
                let s: f64 = value
                    .parse()
                    .map_err(|_| format!("--max-seconds takes seconds, not `{value}`"))?;
                if !s.is_finite() || s < 0.0 {
                    return Err(format!("--max-seconds must be 0 or more, not `{value}`"));
                }
                config.max_run_time = (s > 0.0).then(|| Duration::from_secs_f64(s));
            }
            "--variant" => {
                let names = list(&value, &crate::workloads::Variant::NAMES, |v| {
                    crate::workloads::Variant::NAMES
                        .iter()
                        .copied()
                        .find(|n| *n == v)
                        .ok_or_else(|| format!("unknown variant `{v}`"))
                })?;
                config.variants = names.into_iter().map(str::to_owned).collect();
            }
            "--repeat" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| format!("--repeat takes a count, not `{value}`"))?;
                if n == 0 {
                    return Err("--repeat must be at least 1".to_owned());
                }
                config.repeat = n;
            }
            other => return Err(format!("unknown flag `{other}`\n\n{USAGE}")),
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::parse;
    use crate::{Backend, Workload};

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn lists_and_all_are_parsed() {
        let c = parse(args(
            "--backend sqlite,pg --workload all --workers 2,4 --quick",
        ))
        .unwrap();
        assert_eq!(c.backends, [Backend::Sqlite, Backend::Postgres]);
        assert_eq!(c.workloads, Workload::ALL);
        assert_eq!(c.workers, [2, 4]);
        assert!(c.quick);
    }

    #[test]
    fn unknown_flags_and_values_are_errors() {
        assert!(parse(args("--backend oracle")).is_err());
        assert!(parse(args("--workload w9")).is_err());
        assert!(parse(args("--workers 0")).is_err());
        assert!(parse(args("--frobnicate 1")).is_err());
        assert!(parse(args("--ops")).is_err());
    }
}
