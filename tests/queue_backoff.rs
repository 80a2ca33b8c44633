//! Back-off between deliveries: an entry whose handler always fails is
//! delivered again after delays that grow with its delivery count (from
//! `Worker::redelivery_backoff`), long before `claim_idle`, while other
//! entries sent meanwhile are handled at once by the same single slot. On
//! every SQL backend; and nonsense settings are refused.

#![allow(clippy::manual_assert)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::{CancellationToken, Handler, Stream, Worker};

fn redis_client() -> safesync::queue::Redis {
    let url =
        std::env::var("SAFESYNC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    safesync::queue::client(&url).unwrap()
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Job {
    id: i64,
}

/// The job that always fails.
const FAILING: i64 = 0;
const MAX_DELIVERIES: u64 = 5;
const FIRST: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(2);
/// Far beyond the test: any redelivery seen comes from the back-off.
const CLAIM_IDLE: Duration = Duration::from_secs(20);
const GROUP: &str = "backoff";

/// When each job's handler ran.
type Runs = Arc<Mutex<HashMap<i64, Vec<Instant>>>>;

struct Work {
    stream: &'static str,
    runs: Runs,
}

impl Handler for Work {
    type Payload = Job;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        GROUP
    }

    fn handle<'t>(&'t self, tx: &'t mut Tx<'_>, job: Job) -> BoxFuture<'t, Result<(), Error>> {
        Box::pin(async move {
            self.runs
                .lock()
                .unwrap()
                .entry(job.id)
                .or_default()
                .push(Instant::now());
            tx.execute(&format!(
                "INSERT INTO backoff_done (id) VALUES ({})",
                job.id
            ))
            .await?;
            if job.id == FAILING {
                return Err(Error::Config("always failing".to_owned()));
            }
            Ok(())
        })
    }
}

/// Runs [`Work`] on `stream` until `stop`, as `configure` sets it up.
fn spawn(
    t: &TestDb,
    stream: &'static str,
    runs: &Runs,
    stop: &CancellationToken,
    configure: impl FnOnce(Worker) -> Worker,
) -> tokio::task::JoinHandle<Result<safesync::Summary, Error>> {
    let worker = Worker::new(t.db.clone(), redis_client()).handle(Work {
        stream,
        runs: Arc::clone(runs),
    });
    tokio::spawn(configure(worker.claim_idle(CLAIM_IDLE)).run(stop.clone()))
}

async fn the_delays_between_deliveries_grow_and_others_flow(backend: Backend) {
    let t = TestDb::new(backend).await;
    t.exec("CREATE TABLE backoff_done (id BIGINT NOT NULL)")
        .await;
    let stream: &'static str = Box::leak(common::unique("backoff").into_boxed_str());
    let jobs: Stream<Job> = Stream::new(stream);
    let redis = redis_client();
    jobs.send(&redis, &Job { id: FAILING }).await.unwrap();
    let runs = Runs::default();
    let stop = CancellationToken::new();
    let worker = spawn(&t, stream, &runs, &stop, |w| {
        // One slot: an entry waiting out its back-off must not hold it.
        w.concurrency(1)
            .redelivery_backoff(FIRST, MAX)
            .max_deliveries(MAX_DELIVERIES)
    });

    // Other jobs, sent one by one while the failing one backs off: each is
    // handled at once.
    let mut sent = HashMap::new();
    for id in 1..=8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        sent.insert(id, Instant::now());
        jobs.send(&redis, &Job { id }).await.unwrap();
    }

    let start = Instant::now();
    loop {
        let dead = safesync::queue::dead_letters(&redis, stream, GROUP)
            .await
            .unwrap();
        if !dead.is_empty() {
            break;
        }
        if start.elapsed() > CLAIM_IDLE / 2 {
            panic!(
                "not dead-lettered after {:?}: runs {:?}",
                start.elapsed(),
                runs.lock().unwrap().get(&FAILING)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let summary = worker.await.unwrap().unwrap();
    let runs = runs.lock().unwrap().clone();

    let failing = &runs[&FAILING];
    assert_eq!(failing.len() as u64, MAX_DELIVERIES, "{failing:?}");
    let gaps: Vec<Duration> = failing.windows(2).map(|w| w[1] - w[0]).collect();
    // Delivery k waits between half and all of min(FIRST × 2^(k-1), MAX):
    // [100, 200], [200, 400], [400, 800], [800, 1600] ms (plus the run).
    let mut cap = FIRST;
    for (k, gap) in gaps.iter().enumerate() {
        assert!(
            // Above: the handler's run and a loaded machine, far below
            // claim_idle.
            *gap + Duration::from_millis(10) >= cap / 2 && *gap < cap + Duration::from_secs(1),
            "gap {k} is {gap:?}, expected within [{:?}, {cap:?}]: {gaps:?}",
            cap / 2
        );
        cap = (cap * 2).min(MAX);
    }
    assert!(
        gaps.last().unwrap() >= &(gaps[0] * 2),
        "the delays do not grow: {gaps:?}"
    );
    let last = *failing.last().unwrap();
    for id in 1..=8 {
        let ran = runs[&id][0];
        let waited = ran - sent[&id];
        assert!(
            waited < Duration::from_millis(500),
            "job {id} waited {waited:?} (held up by the failing one?)"
        );
        assert!(
            ran < last,
            "job {id} ran after the failing job's last delivery"
        );
    }
    assert_eq!(
        (summary.failed, summary.dead_lettered, summary.processed),
        (MAX_DELIVERIES, 1, 8),
        "{summary:?}"
    );
    t.cleanup().await;
}

/// With a free slot and nothing else sent, the read loop is blocked in
/// `XREADGROUP` (5 s) when the entry fails: the end of its back-off must
/// wake it, not the end of the block.
async fn a_back_off_ending_wakes_a_blocked_read(backend: Backend) {
    let t = TestDb::new(backend).await;
    t.exec("CREATE TABLE backoff_done (id BIGINT NOT NULL)")
        .await;
    let stream: &'static str = Box::leak(common::unique("backoff-wake").into_boxed_str());
    Stream::<Job>::new(stream)
        .send(&redis_client(), &Job { id: FAILING })
        .await
        .unwrap();
    let runs = Runs::default();
    let stop = CancellationToken::new();
    let worker = spawn(&t, stream, &runs, &stop, |w| {
        w.concurrency(2)
            .block(Duration::from_secs(5))
            .redelivery_backoff(FIRST, FIRST)
            .max_deliveries(3)
    });
    let start = Instant::now();
    while runs.lock().unwrap().get(&FAILING).map_or(0, Vec::len) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "runs {:?}",
            runs.lock().unwrap().get(&FAILING)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    worker.await.unwrap().unwrap();
    let failing = runs.lock().unwrap()[&FAILING].clone();
    for gap in failing.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap < FIRST + Duration::from_secs(1),
            "a redelivery waited {gap:?}: the blocked read was not woken"
        );
    }
    t.cleanup().await;
}

on_every_backend!(
    the_delays_between_deliveries_grow_and_others_flow,
    a_back_off_ending_wakes_a_blocked_read,
);

#[tokio::test]
async fn nonsense_back_off_settings_are_refused_naming_the_setting() {
    let t = TestDb::new(Backend::Sqlite).await;
    let ms = Duration::from_millis;
    for (first, max) in [(ms(0), ms(10)), (ms(20), ms(10)), (ms(10), ms(61_000))] {
        let err = Worker::new(t.db.clone(), redis_client())
            .handle(Work {
                stream: "backoff-never-read",
                runs: Runs::default(),
            })
            .claim_idle(Duration::from_secs(60))
            .redelivery_backoff(first, max)
            .run(CancellationToken::new())
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, Error::Config(m) if m.contains("`Worker::redelivery_backoff`")),
            "{err:?}"
        );
    }
}
