//! The built `safesync` binary against the real Redis (`SAFESYNC_REDIS_URL`,
//! default `redis://127.0.0.1:6379`) and databases (SQLite in a temporary
//! directory; MariaDB and PostgreSQL at `SAFESYNC_MYSQL_URL` /
//! `SAFESYNC_PG_URL`, in a fresh database per test). State is set up with
//! the library: messages sent, a worker whose handler fails, named locks
//! held. Every test checks the human output, the `--json` output and the
//! exit code.

#![allow(clippy::manual_assert, clippy::too_many_lines)]
// tests/common gates its queue helpers on the facade crate's `queue`
// feature, which this crate does not have: they are left out here.
#![allow(unexpected_cfgs)]

#[path = "../../tests/common/mod.rs"]
mod common;

// The private Redis Cluster of the root crate's tests (its module is gated
// on a feature this crate does not have).
#[allow(dead_code, unreachable_pub)] // reason: helpers this crate's tests do not use; pub for the root crate's tests
#[path = "../../tests/common/cluster.rs"]
mod cluster;

use std::process::Command;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use safesync::__private::BoxFuture;
use safesync::redis::{self, aio::MultiplexedConnection};
use safesync::{CancellationToken, Db, Error, Handler, Stream, Tx, Worker, sqlx};
use serde_json::Value;

use common::{Backend, mysql_url, pg_url, unique};

/// A password the PostgreSQL URLs carry: the test server trusts local
/// users, so it is never checked, and it must never be printed.
const PG_PASSWORD: &str = "Cli-S3cret-pw";

fn redis_url() -> String {
    std::env::var("SAFESYNC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// What a run of the binary printed, and its exit code.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self:?}");
        assert!(self.stderr.is_empty(), "{self:?}");
        self
    }

    /// Asserts `secret` appears nowhere in what was printed.
    fn never_shows(&self, secret: &str) {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the password was printed: {self:?}"
        );
    }
}

/// Runs the built `safesync` with `args`, with no URL from the environment.
fn safesync(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_safesync"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("SAFESYNC_REDIS_URL")
        .env_remove("SAFESYNC_REDIS_CLUSTER")
        .output()
        .expect("the binary runs");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 errors"),
    }
}

async fn conn() -> MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {} is not answering: {e}", redis_url()))
}

/// Deletes the stream and the keys of its groups.
async fn delete_stream(stream: &str, groups: &[&str]) {
    let mut c = conn().await;
    let mut cmd = redis::cmd("DEL");
    cmd.arg(stream).arg(format!("{stream}:dead"));
    for g in groups {
        cmd.arg(safesync::queue::dead_letter_key(stream, g))
            .arg(safesync::queue::replay_key(stream, g));
    }
    let _: () = cmd.query_async(&mut c).await.unwrap();
}

/// Waits until `check` is true, at most `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    order_id: i64,
}

/// A handler that fails on order 13, and handles the rest.
struct Bill {
    stream: &'static str,
    group: &'static str,
}

impl Handler for Bill {
    type Payload = OrderPlaced;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        self.group
    }

    fn handle<'t>(
        &'t self,
        _tx: &'t mut Tx<'_>,
        msg: OrderPlaced,
    ) -> BoxFuture<'t, Result<(), Error>> {
        Box::pin(async move {
            if msg.order_id == 13 {
                Err(Error::Config(format!(
                    "card declined for order {}",
                    msg.order_id
                )))
            } else {
                Ok(())
            }
        })
    }
}

/// Runs a worker with [`Bill`] in groups `billing` and `audit` until each
/// group has `per_group` dead letters.
async fn dead_letter_in_both_groups(stream: &'static str, per_group: usize) {
    let redis = safesync::queue::client(&redis_url()).unwrap();
    dead_letter_in_both_groups_on(&redis, stream, per_group).await;
}

/// [`dead_letter_in_both_groups`] on `redis`, a node or a cluster.
async fn dead_letter_in_both_groups_on(
    redis: &safesync::queue::Redis,
    stream: &'static str,
    per_group: usize,
) {
    let db = Db::connect("sqlite::memory:").await.unwrap();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(db, redis.clone())
            .handle(Bill {
                stream,
                group: "billing",
            })
            .handle(Bill {
                stream,
                group: "audit",
            })
            .block(Duration::from_millis(100))
            .max_deliveries(1)
            .run(stop.clone()),
    );
    wait_for("the dead letters", Duration::from_secs(20), || async move {
        let mut counts = Vec::new();
        for g in ["billing", "audit"] {
            counts.push(
                safesync::queue::dead_letters(redis, stream, g)
                    .await
                    .unwrap()
                    .len(),
            );
        }
        counts == [per_group, per_group]
    })
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();
}

// ---------------------------------------------------------------- queue

/// A stream with groups `billing` (two entries read by consumer `w1`, not
/// acknowledged) and `audit` (nothing read), three entries in all.
async fn stream_with_pending() -> &'static str {
    let stream: &'static str = Box::leak(unique("cli_health").into_boxed_str());
    let redis = safesync::queue::client(&redis_url()).unwrap();
    let orders: Stream<OrderPlaced> = Stream::new(stream);
    for id in 1..=3 {
        orders
            .send(&redis, &OrderPlaced { order_id: id })
            .await
            .unwrap();
    }
    let mut c = conn().await;
    for group in ["billing", "audit"] {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("billing")
        .arg("w1")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_health_shows_every_group_or_one() {
    let stream = stream_with_pending().await;
    let url = redis_url();

    let all = safesync(&["queue", "health", "--stream", stream, "--redis-url", &url]).ok();
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert_eq!(lines[0], format!("stream `{stream}`"), "{all:?}");
    assert!(
        lines[1].starts_with("GROUP") && lines[1].contains("OLDEST PENDING IDLE"),
        "{all:?}"
    );
    let row = |group: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{group} ")))
            .map_or_else(
                || panic!("no row for {group}: {all:?}"),
                |l| l.split_whitespace().collect::<Vec<_>>(),
            )
    };
    // GROUP LENGTH LAG PENDING OLDEST DEAD CONSUMERS
    let billing = row("billing");
    assert_eq!(
        (billing[1], billing[2], billing[3], billing[5], billing[6]),
        ("3", "1", "2", "0", "1"),
        "{all:?}"
    );
    assert!(
        billing[4].ends_with("ms") || billing[4].ends_with('s'),
        "{all:?}"
    );
    let audit = row("audit");
    assert_eq!(
        (audit[1], audit[2], audit[3], audit[4], audit[6]),
        ("3", "3", "0", "-", "0"),
        "{all:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().get(..3)
                == Some(&["billing", "w1", "2"][..])),
        "the consumer with its pending count: {all:?}"
    );

    let json = safesync(&[
        "queue",
        "health",
        "--stream",
        stream,
        "--redis-url",
        &url,
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(json["stream"], stream);
    let groups = json["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{json}");
    let billing = groups.iter().find(|g| g["group"] == "billing").unwrap();
    assert_eq!(
        (
            &billing["length"],
            &billing["lag"],
            &billing["pending"],
            &billing["dead_letters"]
        ),
        (&3.into(), &1.into(), &2.into(), &0.into()),
        "{json}"
    );
    assert!(
        billing["oldest_pending_idle_ms"].as_u64().is_some(),
        "{json}"
    );
    assert_eq!(billing["consumers"][0]["name"], "w1");
    assert_eq!(billing["consumers"][0]["pending"], 2);
    let audit = groups.iter().find(|g| g["group"] == "audit").unwrap();
    assert_eq!(audit["oldest_pending_idle_ms"], Value::Null, "{json}");
    assert_eq!(audit["consumers"].as_array().unwrap().len(), 0, "{json}");

    let one = safesync(&[
        "queue",
        "health",
        "--stream",
        stream,
        "--group",
        "audit",
        "--redis-url",
        &url,
        "--json",
    ])
    .ok()
    .json();
    let groups = one["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{one}");
    assert_eq!(groups[0]["group"], "audit");

    delete_stream(stream, &["billing", "audit"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_pending_lists_entries_with_consumer_idle_and_deliveries() {
    let stream = stream_with_pending().await;
    let url = redis_url();
    let pending = |group: &str, extra: &[&str]| {
        let at = [
            "--stream",
            stream,
            "--group",
            group,
            "--redis-url",
            url.as_str(),
        ];
        safesync(&[&["queue", "pending"][..], &at, extra].concat())
    };
    let mut c = conn().await;
    let ids: Vec<String> = {
        let range: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await
            .unwrap();
        range.into_iter().map(|(id, _)| id).collect()
    };

    let human = pending("billing", &[]).ok();
    let lines: Vec<Vec<&str>> = human
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["ID", "CONSUMER", "IDLE", "DELIVERIES"],
        "{human:?}"
    );
    assert_eq!(lines.len(), 3, "{human:?}");
    for (line, id) in lines[1..].iter().zip(&ids) {
        assert_eq!(
            (line[0], line[1], line[3]),
            (id.as_str(), "w1", "1"),
            "{human:?}"
        );
    }

    let json = pending("billing", &["--json", "--limit", "1"]).ok().json();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), 1, "--limit 1: {json}");
    assert_eq!(entries[0]["id"], ids[0].as_str());
    assert_eq!(entries[0]["consumer"], "w1");
    assert_eq!(entries[0]["deliveries"], 1);
    assert!(entries[0]["idle_ms"].as_u64().is_some(), "{json}");

    let empty = pending("audit", &[]).ok();
    assert_eq!(
        empty.stdout,
        format!("nothing pending in group `audit` of stream `{stream}`\n")
    );

    let no_group = pending("nope", &[]);
    assert_eq!(no_group.code, 1, "{no_group:?}");
    assert_eq!(
        no_group.stderr,
        format!("error: not found: consumer group `nope` of stream `{stream}`\n")
    );
    delete_stream(stream, &["billing", "audit"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_streams_bad_urls_and_bad_arguments_have_their_exit_codes() {
    let url = redis_url();
    let stream = unique("cli_missing");
    let at = ["--stream", &stream, "--group", "g", "--redis-url", &url];
    for args in [
        vec!["queue", "health", "--stream", &stream, "--redis-url", &url],
        [&["dlq", "list"][..], &at].concat(),
        [&["dlq", "replay", "--all"][..], &at].concat(),
        [&["dlq", "purge"][..], &at].concat(),
        vec![
            "queue",
            "pending",
            "--stream",
            &stream,
            "--group",
            "g",
            "--redis-url",
            &url,
        ],
    ] {
        let run = safesync(&args);
        assert_eq!(run.code, 1, "{run:?}");
        assert_eq!(run.stderr, format!("error: not found: stream `{stream}`\n"));
        assert!(run.stdout.is_empty(), "{run:?}");
    }

    // A URL with a password: neither a bad one nor an unreachable one is
    // ever printed with it.
    for bad in [
        "http://ops:Hunter2-secret@127.0.0.1:6379",
        "redis://ops:Hunter2-secret@127.0.0.1:1",
    ] {
        for json in [false, true] {
            let mut args = vec![
                "dlq",
                "list",
                "--stream",
                "s",
                "--group",
                "g",
                "--redis-url",
                bad,
            ];
            if json {
                args.push("--json");
            }
            let run = safesync(&args);
            assert_eq!(run.code, 1, "{run:?}");
            assert!(run.stderr.starts_with("error: "), "{run:?}");
            run.never_shows("Hunter2-secret");
        }
    }
    // From the environment too.
    let out = Command::new(env!("CARGO_BIN_EXE_safesync"))
        .args(["queue", "health", "--stream", "s"])
        .env("SAFESYNC_REDIS_URL", "redis://:Env-Secret-9@127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("Env-Secret-9"), "{stderr}");

    // Usage errors: 2.
    for args in [
        vec!["dlq", "replay", "--stream", "s", "--group", "g"],
        vec![
            "dlq", "replay", "1-0", "--all", "--stream", "s", "--group", "g",
        ],
        vec![
            "ledger",
            "prune",
            "--older-than",
            "7y",
            "--db",
            "sqlite::memory:",
        ],
        vec!["queue", "pending", "--stream", "s"],
        vec!["frobnicate"],
    ] {
        let run = safesync(&args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("error: "), "{run:?}");
    }
    let help = safesync(&["--help"]).ok();
    assert!(help.stdout.contains("Exit codes: 0 success"), "{help:?}");
    // The help never shows an environment variable's value.
    let out = Command::new(env!("CARGO_BIN_EXE_safesync"))
        .args(["locks", "--help"])
        .env("DATABASE_URL", "postgres://u:Env-Db-Secret@h/db")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("DATABASE_URL"), "{help}");
    assert!(!help.contains("Env-Db-Secret"), "{help}");
}

/// Dead letters of two groups on one stream, from a worker whose handler
/// fails on order 13 and that cannot decode two entries (one not UTF-8).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dlq_lists_shows_replays_and_purges_one_groups_dead_letters() {
    let stream: &'static str = Box::leak(unique("cli_dlq").into_boxed_str());
    let url = redis_url();
    let redis = safesync::queue::client(&url).unwrap();
    let orders: Stream<OrderPlaced> = Stream::new(stream);
    let declined = orders
        .send(&redis, &OrderPlaced { order_id: 13 })
        .await
        .unwrap();
    orders
        .send(&redis, &OrderPlaced { order_id: 1 })
        .await
        .unwrap();
    let mut c = conn().await;
    let not_json: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("data")
        .arg("{not json")
        .query_async(&mut c)
        .await
        .unwrap();
    let binary: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("data")
        .arg(&[0xff_u8, 0xfe, b'{'][..])
        .query_async(&mut c)
        .await
        .unwrap();

    dead_letter_in_both_groups(stream, 3).await;

    let at = [
        "--stream",
        stream,
        "--group",
        "billing",
        "--redis-url",
        url.as_str(),
    ];
    let with = |head: &[&str], tail: &[&str]| -> Vec<String> {
        head.iter()
            .chain(&at)
            .chain(tail)
            .map(|s| (*s).to_owned())
            .collect()
    };
    let run = |args: Vec<String>| safesync(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // list, human: the reason and the payload, as text or escaped bytes.
    let list = run(with(&["dlq", "list"], &[])).ok();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("REASON") && lines[0].ends_with("PAYLOAD"),
        "{list:?}"
    );
    assert_eq!(lines.len(), 4, "{list:?}");
    let line_of = |original: &str| {
        *lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(original))
            .unwrap_or_else(|| panic!("no dead letter of {original}: {list:?}"))
    };
    let l = line_of(&declined);
    assert!(l.contains("card declined for order 13"), "{l}");
    assert!(l.ends_with(r#"{"order_id":13}"#), "{l}");
    assert!(line_of(&not_json).ends_with("{not json"), "{list:?}");
    assert!(line_of(&binary).ends_with(r#"b"\xff\xfe{""#), "{list:?}");

    // list, JSON: every field, text or hex.
    let json = run(with(&["dlq", "list"], &["--json"])).ok().json();
    let dead = json.as_array().unwrap();
    assert_eq!(dead.len(), 3, "{json}");
    let of = |original: &str| {
        dead.iter()
            .find(|d| d["original_id"] == original)
            .unwrap_or_else(|| panic!("{original} in {json}"))
            .clone()
    };
    let d13 = of(&declined);
    assert_eq!(d13["group"], "billing");
    assert_eq!(d13["deliveries"], 1);
    assert!(
        d13["reason"]
            .as_str()
            .unwrap()
            .contains("card declined for order 13"),
        "{d13}"
    );
    assert_eq!(
        d13["fields"],
        serde_json::json!([{ "name": "data", "value": { "text": r#"{"order_id":13}"# } }])
    );
    assert_eq!(
        of(&binary)["fields"],
        serde_json::json!([{ "name": "data", "value": { "hex": "fffe7b" } }])
    );
    assert!(
        of(&not_json)["reason"]
            .as_str()
            .unwrap()
            .starts_with("cannot decode"),
        "{json}"
    );

    // show
    let id13 = d13["id"].as_str().unwrap();
    let show = run(with(&["dlq", "show", id13], &[])).ok();
    assert!(
        show.stdout.starts_with(&format!("id:          {id13}\n")),
        "{show:?}"
    );
    assert!(
        show.stdout.contains(&format!("original id: {declined}\n")),
        "{show:?}"
    );
    assert!(
        show.stdout
            .contains("reason:      the handler failed on delivery 1 of at most 1: configuration error: card declined for order 13\n"),
        "{show:?}"
    );
    assert!(
        show.stdout
            .ends_with("fields:\n  data: {\"order_id\":13}\n"),
        "{show:?}"
    );
    assert_eq!(
        run(with(&["dlq", "show", id13], &["--json"])).ok().json(),
        d13
    );
    let missing = run(with(&["dlq", "show", "1-0"], &[]));
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing
            .stderr
            .contains("not found: dead letter 1-0 of group `billing`"),
        "{missing:?}"
    );

    // replay one: it goes to billing's replay stream, and leaves the list.
    let replay = run(with(&["dlq", "replay", id13], &["--json"])).ok().json();
    let replay_key = safesync::queue::replay_key(stream, "billing");
    assert_eq!(replay["replay_stream"], replay_key.as_str());
    assert_eq!(replay["replayed"][0]["id"], id13);
    let new_id = replay["replayed"][0]["new_id"].as_str().unwrap().to_owned();
    let on_replay: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&replay_key)
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(on_replay.len(), 1);
    assert_eq!(on_replay[0].0, new_id);
    assert_eq!(
        on_replay[0].1[0],
        ("data".to_owned(), r#"{"order_id":13}"#.to_owned())
    );
    assert_eq!(
        safesync::queue::dead_letters(&redis, stream, "billing")
            .await
            .unwrap()
            .len(),
        2
    );

    // replay --all (human), then purge the audit group: billing keeps none,
    // audit none after its purge, and purge never touches another group.
    let all = run(with(&["dlq", "replay"], &["--all"])).ok();
    assert_eq!(all.stdout.lines().count(), 2, "{all:?}");
    assert!(
        all.stdout
            .lines()
            .all(|l| l.starts_with("replayed ") && l.contains(&format!("to `{replay_key}` as "))),
        "{all:?}"
    );
    assert!(
        safesync::queue::dead_letters(&redis, stream, "billing")
            .await
            .unwrap()
            .is_empty()
    );
    let empty = run(with(&["dlq", "list"], &[])).ok();
    assert_eq!(
        empty.stdout,
        format!("no dead letters in group `billing` of stream `{stream}`\n")
    );

    let audit_at = [
        "--stream",
        stream,
        "--group",
        "audit",
        "--redis-url",
        url.as_str(),
    ];
    let purge = safesync(&[&["dlq", "purge"][..], &audit_at, &["--json"]].concat())
        .ok()
        .json();
    assert_eq!(purge["purged"], 3, "{purge}");
    assert!(
        safesync::queue::dead_letters(&redis, stream, "audit")
            .await
            .unwrap()
            .is_empty()
    );
    let again = safesync(&[&["dlq", "purge"][..], &audit_at].concat()).ok();
    assert_eq!(
        again.stdout,
        format!("purged 0 dead letter(s) of group `audit` of stream `{stream}`\n")
    );

    delete_stream(stream, &["billing", "audit"]).await;
}

/// `purge` deletes only its own group's dead letters: in its own key, and
/// in the key every group shared before (`<stream>:dead`, where older
/// versions wrote them; set up here as they wrote them).
/// `--redis-cluster` / `SAFESYNC_REDIS_CLUSTER`: the commands reach a
/// Redis Cluster through its seeds (a private 3 + 3 cluster; the shared
/// Redis at the default URL does not have the stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_reach_a_redis_cluster_through_its_seeds() {
    let cluster = tokio::task::spawn_blocking(cluster::Cluster::start)
        .await
        .unwrap();
    let seeds = cluster.urls().join(",");
    let redis = cluster.redis();
    let stream: &'static str = Box::leak(unique("cli_cluster").into_boxed_str());
    let orders: Stream<OrderPlaced> = Stream::new(stream);
    for id in [1, 13, 2] {
        orders
            .send(&redis, &OrderPlaced { order_id: id })
            .await
            .unwrap();
    }
    dead_letter_in_both_groups_on(&redis, stream, 1).await;

    let health = safesync(&[
        "queue",
        "health",
        "--stream",
        stream,
        "--redis-cluster",
        &seeds,
        "--json",
    ])
    .ok()
    .json();
    let groups = health["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{health}");
    for g in groups {
        assert_eq!(
            (&g["length"], &g["pending"], &g["dead_letters"]),
            (&3.into(), &0.into(), &1.into()),
            "{health}"
        );
    }
    let list = safesync(&[
        "dlq",
        "list",
        "--stream",
        stream,
        "--group",
        "billing",
        "--redis-cluster",
        &seeds,
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // The environment variable does what the flag does.
    let out = Command::new(env!("CARGO_BIN_EXE_safesync"))
        .args(["dlq", "purge", "--stream", stream, "--group", "billing"])
        .env("SAFESYNC_REDIS_CLUSTER", &seeds)
        .env_remove("SAFESYNC_REDIS_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let left = |g: &'static str| {
        let redis = redis.clone();
        async move {
            safesync::queue::dead_letters(&redis, stream, g)
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(left("billing").await, 0, "purged");
    assert_eq!(left("audit").await, 1, "the other group's stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dlq_purge_leaves_other_groups_dead_letters() {
    let stream: &'static str = Box::leak(unique("cli_purge").into_boxed_str());
    let url = redis_url();
    let redis = safesync::queue::client(&url).unwrap();
    let orders: Stream<OrderPlaced> = Stream::new(stream);
    orders
        .send(&redis, &OrderPlaced { order_id: 13 })
        .await
        .unwrap();
    dead_letter_in_both_groups(stream, 1).await;
    let mut c = conn().await;
    for group in ["billing", "audit"] {
        let _: String = redis::cmd("XADD")
            .arg(format!("{stream}:dead"))
            .arg("*")
            .arg("data")
            .arg(r#"{"order_id":99}"#)
            .arg("dead_original_id")
            .arg("1-0")
            .arg("dead_group")
            .arg(group)
            .arg("dead_consumer")
            .arg("old-worker")
            .arg("dead_deliveries")
            .arg(5)
            .arg("dead_reason")
            .arg("from before per-group keys")
            .query_async(&mut c)
            .await
            .unwrap();
    }

    let purge = safesync(&[
        "dlq",
        "purge",
        "--stream",
        stream,
        "--group",
        "billing",
        "--redis-url",
        &url,
    ])
    .ok();
    assert_eq!(
        purge.stdout,
        format!("purged 2 dead letter(s) of group `billing` of stream `{stream}`\n")
    );
    assert!(
        safesync::queue::dead_letters(&redis, stream, "billing")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        safesync::queue::dead_letters(&redis, stream, "audit")
            .await
            .unwrap()
            .len(),
        2,
        "audit's own dead letter and its old shared one stay"
    );
    delete_stream(stream, &["billing", "audit"]).await;
}

// ------------------------------------------------------------- databases

/// A fresh database for one test: its URL (with a password on
/// PostgreSQL), a library handle on it, and how to drop it.
struct TestDb {
    backend: Backend,
    url: String,
    db: Db,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    async fn new(backend: Backend) -> TestDb {
        let name = unique("sscli");
        let (url, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}", dir.path().join("ops.db").display());
                (url, Some(dir))
            }
            Backend::MySql => {
                admin(&mysql_url(), &format!("CREATE DATABASE {name}")).await;
                let base = mysql_url();
                (format!("{}/{name}", base.rsplit_once('/').unwrap().0), None)
            }
            Backend::Postgres => {
                admin(&pg_url(), &format!("CREATE DATABASE {name}")).await;
                let opts = sqlx::postgres::PgConnectOptions::from_str(&pg_url()).unwrap();
                let url = format!(
                    "postgres://{}:{PG_PASSWORD}@{}:{}/{name}",
                    opts.get_username(),
                    opts.get_host(),
                    opts.get_port()
                );
                (url, None)
            }
        };
        let db = Db::connect(&url).await.unwrap();
        TestDb {
            backend,
            url,
            db,
            name,
            _dir: dir,
        }
    }

    /// The password in [`TestDb::url`], which output must never show.
    fn password(&self) -> Option<&'static str> {
        match self.backend {
            Backend::Sqlite => None,
            Backend::MySql => Some("safesync:safesync"),
            Backend::Postgres => Some(PG_PASSWORD),
        }
    }

    fn check_no_password(&self, run: &Run) {
        if let Some(p) = self.password() {
            run.never_shows(p);
        }
    }

    async fn cleanup(self) {
        self.db.close().await;
        match self.backend {
            Backend::Sqlite => {}
            Backend::MySql => {
                admin(
                    &mysql_url(),
                    &format!("DROP DATABASE IF EXISTS {}", self.name),
                )
                .await;
            }
            Backend::Postgres => {
                let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
                admin(&pg_url(), &drop).await;
            }
        }
    }
}

/// Runs `sql` on the server at `url`.
async fn admin(url: &str, sql: &str) {
    let admin = Db::connect(url)
        .await
        .unwrap_or_else(|e| panic!("the server at {url} is not answering: {e}"));
    admin.execute(sql).await.unwrap();
    admin.close().await;
}

on_every_backend!(
    ledger_prune_deletes_only_rows_older_than_the_age,
    locks_lists_a_held_named_lock_and_its_holder,
);

async fn ledger_prune_deletes_only_rows_older_than_the_age(backend: Backend) {
    let t = TestDb::new(backend).await;
    safesync::queue::ensure_ledger(&t.db).await.unwrap();
    let ten_days_ago = match backend {
        Backend::Sqlite => "datetime('now', '-10 days')",
        Backend::MySql => "NOW(6) - INTERVAL 10 DAY",
        Backend::Postgres => "now() - interval '10 days'",
    };
    t.db.execute(&format!(
        "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id, processed_at) \
         VALUES ('s', 'g', '1-0', {ten_days_ago}), ('s', 'g', '2-0', {ten_days_ago})"
    ))
    .await
    .unwrap();
    t.db.execute(
        "INSERT INTO safesync_queue_ledger (stream, consumer_group, entry_id) VALUES ('s', 'g', '3-0')",
    )
    .await
    .unwrap();

    let kept = safesync(&["ledger", "prune", "--older-than", "11d", "--db", &t.url]).ok();
    assert_eq!(
        kept.stdout,
        "deleted 0 ledger row(s) older than 11d from `safesync_queue_ledger`\n"
    );
    let human = safesync(&["ledger", "prune", "--older-than", "7d", "--db", &t.url]).ok();
    assert_eq!(
        human.stdout,
        "deleted 2 ledger row(s) older than 7d from `safesync_queue_ledger`\n"
    );
    t.check_no_password(&human);
    let json = safesync(&[
        "ledger",
        "prune",
        "--older-than",
        "1h",
        "--db",
        &t.url,
        "--json",
    ])
    .ok();
    assert_eq!(
        json.json(),
        serde_json::json!({ "deleted": 0, "older_than_s": 3600 })
    );
    let left: Vec<(String,)> = match backend {
        Backend::Sqlite => sqlx::query_as("SELECT entry_id FROM safesync_queue_ledger")
            .fetch_all(t.db.as_sqlite().unwrap())
            .await
            .unwrap(),
        Backend::MySql => {
            sqlx::query_as("SELECT CAST(entry_id AS CHAR) FROM safesync_queue_ledger")
                .fetch_all(t.db.as_mysql().unwrap())
                .await
                .unwrap()
        }
        Backend::Postgres => sqlx::query_as("SELECT entry_id FROM safesync_queue_ledger")
            .fetch_all(t.db.as_postgres().unwrap())
            .await
            .unwrap(),
    };
    assert_eq!(left, [("3-0".to_owned(),)]);

    // Errors: exit 1, the password never shown.
    let unreachable = match backend {
        Backend::Sqlite => "sqlite:/nonexistent-dir/x/ops.db".to_owned(),
        Backend::MySql => "mysql://safesync:safesync@127.0.0.1:1/x".to_owned(),
        Backend::Postgres => format!("postgres://postgres:{PG_PASSWORD}@127.0.0.1:1/x"),
    };
    let err = safesync(&[
        "ledger",
        "prune",
        "--older-than",
        "7d",
        "--db",
        &unreachable,
    ]);
    assert_eq!(err.code, 1, "{err:?}");
    assert!(err.stderr.starts_with("error: "), "{err:?}");
    t.check_no_password(&err);
    t.cleanup().await;
}

async fn locks_lists_a_held_named_lock_and_its_holder(backend: Backend) {
    let t = TestDb::new(backend).await;
    let name = unique("cli-lock");
    let other = unique("cli-free");
    let guard =
        t.db.advisory_lock(&name, Duration::from_secs(5))
            .await
            .unwrap();
    // SQLite's holder is the OS process holding the lock file: this one.
    let holder = guard
        .session_id()
        .unwrap_or_else(|| i64::from(std::process::id()));

    let run = safesync(&[
        "locks", "--db", &t.url, "--name", &name, "--name", &other, "--json",
    ])
    .ok();
    t.check_no_password(&run);
    let json = run.json();
    let mine: Vec<&Value> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["holder"] == holder)
        .collect();
    assert_eq!(mine.len(), 1, "exactly our lock, held by us: {json}");
    assert_eq!(mine[0]["name"], name.as_str(), "{json}");
    if backend != Backend::MySql {
        assert_eq!(mine[0]["key"], safesync::advisory_key(&name), "{json}");
    }
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .all(|l| l["name"] != other.as_str()),
        "a free lock is not listed: {json}"
    );

    let human = safesync(&["locks", "--db", &t.url, "--name", &name]).ok();
    t.check_no_password(&human);
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("HOLDER"),
        "{human:?}"
    );
    let row: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("no row for {name}: {human:?}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[2], holder.to_string(), "{human:?}");

    let unnamed = safesync(&["locks", "--db", &t.url]);
    if backend == Backend::MySql {
        // MariaDB without the `metadata_lock_info` plugin cannot list.
        assert_eq!(unnamed.code, 1, "{unnamed:?}");
        assert!(
            unnamed
                .stderr
                .contains("MySQL/MariaDB cannot list the named locks held")
                && unnamed.stderr.contains("metadata_lock_info"),
            "{unnamed:?}"
        );
        t.check_no_password(&unnamed);
    } else {
        // Without the name: the key, and `?` for the name.
        let unnamed = unnamed.ok();
        let key = safesync::advisory_key(&name).to_string();
        assert!(
            unnamed.stdout.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.get(..3) == Some(&["?", key.as_str(), holder.to_string().as_str()][..])
            }),
            "{unnamed:?}"
        );
    }

    guard.release().await.unwrap();
    let after = safesync(&["locks", "--db", &t.url, "--name", &name, "--json"])
        .ok()
        .json();
    assert!(
        after
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["name"] != name.as_str()),
        "released: {after}"
    );
    t.cleanup().await;
}

#[tokio::test]
async fn locks_on_an_in_memory_sqlite_database_say_they_cannot_be_listed() {
    let run = safesync(&["locks", "--db", "sqlite::memory:"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr,
        "error: configuration error: the named locks of an in-memory SQLite database live \
         inside the process that holds them: no other process can list them\n"
    );
}

/// A private MariaDB with the `metadata_lock_info` plugin loaded, on a
/// free port (the shared server does not have it, and is not reconfigured).
/// Run as `nobody` when the tests run as root: `mariadbd` refuses root.
struct PrivateMariaDb {
    port: u16,
    dir: tempfile::TempDir,
    server: std::process::Child,
}

impl PrivateMariaDb {
    fn start() -> PrivateMariaDb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let user: &[&str] = if as_root {
            let status = Command::new("chmod")
                .arg("755")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
            let status = Command::new("chown")
                .args(["-R", "nobody"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
            &["--user=nobody"]
        } else {
            &[]
        };
        let install = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .args(user)
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .expect("mariadb-install-db is installed (the MariaDB server package)");
        assert!(install.status.success(), "{install:?}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Command::new("mariadbd")
            .arg("--no-defaults")
            .args(user)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg("--skip-log-bin")
            .arg("--plugin-load-add=metadata_lock_info.so")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mariadbd is installed");
        PrivateMariaDb { port, dir, server }
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mysql", self.port)
    }

    /// Connects, waiting up to 30 s for the server to start.
    async fn connect(&self) -> Db {
        let start = Instant::now();
        loop {
            match Db::connect(&self.url()).await {
                Ok(db) => return db,
                Err(e) => assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the private MariaDB in {} did not start: {e}",
                    self.dir.path().display()
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// With `metadata_lock_info`, MariaDB lists every named lock with its name
/// and connection, no `--name` needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_on_mariadb_with_metadata_lock_info_lists_every_named_lock() {
    let server = PrivateMariaDb::start();
    let db = server.connect().await;
    let first = db
        .advisory_lock("nightly-report", Duration::from_secs(5))
        .await
        .unwrap();
    let second = db
        .advisory_lock("invoice:7", Duration::from_secs(5))
        .await
        .unwrap();

    let json = safesync(&["locks", "--db", &server.url(), "--json"])
        .ok()
        .json();
    let mut held: Vec<(String, i64)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["holder"].as_i64().unwrap(),
            )
        })
        .collect();
    held.sort();
    assert_eq!(
        held,
        [
            ("invoice:7".to_owned(), second.session_id().unwrap()),
            ("nightly-report".to_owned(), first.session_id().unwrap()),
        ],
        "{json}"
    );
    let human = safesync(&["locks", "--db", &server.url()]).ok();
    let row: Vec<&str> = human
        .stdout
        .lines()
        .find(|l| l.starts_with("nightly-report "))
        .unwrap_or_else(|| panic!("{human:?}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..3],
        [
            "nightly-report",
            "-",
            &first.session_id().unwrap().to_string()
        ]
    );
    assert!(row[4].starts_with("root@"), "{human:?}");

    first.release().await.unwrap();
    second.release().await.unwrap();
    let after = safesync(&["locks", "--db", &server.url()]).ok();
    assert_eq!(after.stdout, "no named locks held\n");
    db.close().await;
}
