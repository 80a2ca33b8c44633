//! Dead letters on a real Redis and every SQL backend: undecodable
//! entries and payloads whose decoding panics, dead letters kept and
//! replayed per group, legacy dead letters, and reasons capped at 1 KiB.

#![allow(clippy::manual_assert, clippy::too_many_lines)]
#![allow(clippy::wildcard_imports)] // reason: the shared queue helpers of tests/common/queue.rs

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::queue::*;
use common::{Backend, TestDb};
use safesync::__private::BoxFuture;
use safesync::prelude::*;
use safesync::redis::{self, aio::MultiplexedConnection};
use safesync::{CancellationToken, Handler, SendOptions, Stream, Worker};

// --- Poison messages ----------------------------------------------------

async fn undecodable_entries_are_dead_lettered_and_the_rest_processed(backend: Backend) {
    let t = setup_orders(backend, 3).await;
    let stream = unique_stream("poison");
    let mut c = conn().await;
    let orders_stream: Stream<OrderPlaced> = Stream::new(stream);
    let raw = c.clone();
    let send = |fields: Vec<(&'static str, Vec<u8>)>| {
        let mut c = raw.clone();
        async move {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream).arg("*");
            for (k, v) in fields {
                cmd.arg(k).arg(v);
            }
            cmd.query_async::<String>(&mut c).await.unwrap()
        }
    };
    let good = |id| OrderPlaced { order_id: id };
    orders_stream
        .send_on(&mut c, &good(1), &SendOptions::default())
        .await
        .unwrap();
    let malformed = send(vec![("data", b"{not json".to_vec())]).await;
    let wrong_type = send(vec![("data", br#"{"order_id":"seven"}"#.to_vec())]).await;
    orders_stream
        .send_on(&mut c, &good(2), &SendOptions::default())
        .await
        .unwrap();
    let missing_field = send(vec![("data", br#"{"id":3}"#.to_vec())]).await;
    let no_data = send(vec![("payload", br#"{"order_id":3}"#.to_vec())]).await;
    let not_utf8 = send(vec![("data", vec![0xff, 0xfe, b'{'])]).await;
    orders_stream
        .send_on(&mut c, &good(3), &SendOptions::default())
        .await
        .unwrap();

    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &behaviour))
            .concurrency(2)
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let db = &t.db;
    wait_for(
        "3 processed and 5 dead letters",
        Duration::from_secs(30),
        || async move {
            processed_count(db).await == 3
                && dead_letter_count(stream).await == 5
                && pending(stream).await == 0
        },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        (s.processed, s.dead_lettered, s.acked, s.failed),
        (3, 5, 8, 0),
        "{s:?}"
    );

    let dead = dead_letters_of(stream).await;
    let by_id: HashMap<&str, &safesync::queue::DeadLetter> =
        dead.iter().map(|d| (d.original_id.as_str(), d)).collect();
    let expect = [
        (
            &malformed,
            "its `data` field is not such JSON: key must be a string",
        ),
        (&wrong_type, "invalid type: string \"seven\", expected i64"),
        (&missing_field, "missing field `order_id`"),
        (&no_data, "it has no `data` field (its fields: `payload`)"),
        (&not_utf8, "its `data` field is not UTF-8"),
    ];
    for (id, needle) in expect {
        let d = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("no dead letter for {id}"));
        assert!(
            d.reason.contains(needle),
            "{id}: {:?} lacks {needle:?}",
            d.reason
        );
        assert!(
            d.reason
                .starts_with(&format!("cannot decode entry {id} of `{stream}` as `")),
            "{:?}",
            d.reason
        );
        assert_eq!((d.group.as_str(), d.deliveries), ("billing", 1));
    }
    assert_eq!(
        by_id[not_utf8.as_str()].data(),
        Some(&[0xff, 0xfe, b'{'][..]),
        "original bytes kept"
    );
    assert_eq!(
        by_id[no_data.as_str()].fields,
        vec![("payload".to_owned(), br#"{"order_id":3}"#.to_vec())]
    );

    // Replay puts the original fields, and the original id, on the group's
    // replay stream (never on the stream) and removes the dead letter; an
    // unknown id, or another group's, is NotFound.
    let stream_length = |c: &mut MultiplexedConnection| {
        let mut c = c.clone();
        async move {
            redis::cmd("XLEN")
                .arg(stream)
                .query_async::<u64>(&mut c)
                .await
                .unwrap()
        }
    };
    let before = stream_length(&mut c).await;
    let replayed = safesync::queue::replay_dead_letter(
        &redis_client(),
        stream,
        "billing",
        &by_id[wrong_type.as_str()].id,
    )
    .await
    .unwrap();
    let back: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(safesync::queue::replay_key(stream, "billing"))
        .arg(&replayed)
        .arg(&replayed)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(back.ids.len(), 1);
    assert_eq!(back.ids[0].map.len(), 2, "the original fields and id");
    assert_eq!(
        back.ids[0].get::<String>("data").as_deref(),
        Some(r#"{"order_id":"seven"}"#)
    );
    assert_eq!(
        back.ids[0].get::<String>("safesync_replay_of").as_deref(),
        Some(wrong_type.as_str())
    );
    assert_eq!(
        stream_length(&mut c).await,
        before,
        "nothing added to the stream"
    );
    assert_eq!(dead_letter_count(stream).await, 4);
    let err = safesync::queue::replay_dead_letter(&redis_client(), stream, "billing", "1-1")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let other = &by_id[malformed.as_str()].id;
    let err = safesync::queue::replay_dead_letter(&redis_client(), stream, "mailer", other)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    delete_stream(stream).await;
    t.cleanup().await;
}

// --- Dead letters per group, replayed to that group alone --------------------

/// One stream, two groups; order 1 fails once in `billing` only and is
/// dead-lettered there. Replayed, it reaches `billing` alone: `billing`
/// applies it once, `shipping` (which had applied it) never sees it again,
/// and nothing is added to the stream.
async fn a_replayed_dead_letter_reaches_only_the_group_that_failed(backend: Backend) {
    let t = setup_orders(backend, 2).await;
    let stream = unique_stream("replay");
    send_orders(stream, 1..=2).await;
    let billing = Arc::new(Behaviour {
        fail_first: HashMap::from([(1, 1)]),
        ..Behaviour::default()
    });
    let shipping = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(handler(stream, &billing))
            .handle(Bill {
                stream,
                group: "shipping",
                behaviour: Arc::clone(&shipping),
            })
            .concurrency(2)
            .max_deliveries(1)
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let redis = redis_client();
    let dead_of = |group: &'static str| {
        let redis = redis.clone();
        async move {
            safesync::queue::dead_letters(&redis, stream, group)
                .await
                .unwrap()
        }
    };
    let db = &t.db;
    wait_for(
        "order 1 dead in billing only",
        Duration::from_secs(30),
        || async {
            dead_of("billing").await.len() == 1
                && orders(db).await.get(&2).is_some_and(|o| o.1 == 2)
                && orders(db).await.get(&1).is_some_and(|o| o.1 == 1)
        },
    )
    .await;
    assert!(dead_of("shipping").await.is_empty());
    let dead = dead_of("billing").await.remove(0);
    let h = safesync::queue::health(&redis, stream, "billing")
        .await
        .unwrap();
    assert_eq!((h.dead_letters, h.legacy_dead_letters), (1, 0));

    safesync::queue::replay_dead_letter(&redis, stream, "billing", &dead.id)
        .await
        .unwrap();
    wait_for(
        "order 1 applied by billing",
        Duration::from_secs(30),
        || async {
            orders(db).await.get(&1).is_some_and(|o| o.1 >= 2) && pending(stream).await == 0
        },
    )
    .await;
    // Time for a wrong second delivery to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!(
        orders(db).await[&1].1,
        2,
        "one effect per group: shipping's first, billing's replay"
    );
    assert_eq!(
        shipping.calls.lock().unwrap()[&1],
        1,
        "shipping saw it once"
    );
    assert_eq!(
        billing.calls.lock().unwrap()[&1],
        2,
        "billing: failed, then replayed"
    );
    assert_eq!((s.processed, s.dead_lettered, s.failed), (4, 1, 1), "{s:?}");
    assert!(dead_of("billing").await.is_empty());
    let mut c = conn().await;
    let length: u64 = redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(length, 2, "the replay never went on the stream");
    let _: () = redis::cmd("DEL")
        .arg(safesync::queue::dead_letter_key(stream, "shipping"))
        .arg(safesync::queue::replay_key(stream, "shipping"))
        .query_async(&mut c)
        .await
        .unwrap();
    delete_stream(stream).await;
    t.cleanup().await;
}

/// Dead letters written by earlier versions to the shared `<stream>:dead`

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_dead_letters_are_listed_and_replayed_per_group() {
    let stream = unique_stream("legacy");
    let legacy = format!("{stream}:dead");
    let mut c = conn().await;
    let add = |group: &str, original: &str| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&legacy)
            .arg("*")
            .arg("data")
            .arg(r#"{"order_id":1}"#);
        for (k, v) in [
            ("dead_original_id", original),
            ("dead_group", group),
            ("dead_consumer", "old"),
            ("dead_deliveries", "5"),
            ("dead_reason", "boom"),
        ] {
            cmd.arg(k).arg(v);
        }
        cmd
    };
    let billing: String = add("billing", "1-1").query_async(&mut c).await.unwrap();
    let mailer: String = add("mailer", "1-2").query_async(&mut c).await.unwrap();
    let redis = redis_client();
    let listed = safesync::queue::dead_letters(&redis, stream, "billing")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].original_id.as_str()),
        (billing.as_str(), "1-1")
    );
    let err = safesync::queue::replay_dead_letter(&redis, stream, "billing", &mailer)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { .. }),
        "another group's: {err:?}"
    );
    safesync::queue::replay_dead_letter(&redis, stream, "billing", &billing)
        .await
        .unwrap();
    let replayed: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(safesync::queue::replay_key(stream, "billing"))
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(replayed.ids.len(), 1);
    assert_eq!(
        replayed.ids[0]
            .get::<String>("safesync_replay_of")
            .as_deref(),
        Some("1-1")
    );
    let left = safesync::queue::dead_letters(&redis, stream, "mailer")
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "the other group's stays");
    assert!(
        safesync::queue::dead_letters(&redis, stream, "billing")
            .await
            .unwrap()
            .is_empty()
    );
    let _: () = redis::cmd("DEL")
        .arg(&legacy)
        .arg(safesync::queue::replay_key(stream, "billing"))
        .query_async(&mut c)
        .await
        .unwrap();
}

// --- Bounded failure reports -------------------------------------------------

/// A 1 MB string where a number belongs: serde's error quotes it, the
/// dead letter's reason keeps at most 1 KiB of it.
async fn a_dead_letter_reason_is_capped_at_1_kib(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = t.db.clone();
    let stream = unique_stream("bigreason");
    let mut c = conn().await;
    let huge = format!(r#"{{"order_id":"{}"}}"#, "x".repeat(1 << 20));
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("data")
        .arg(&huge)
        .query_async(&mut c)
        .await
        .unwrap();
    let behaviour = Arc::new(Behaviour::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(db, redis_client())
            .handle(plain(stream, &behaviour))
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    wait_for("a dead letter", Duration::from_secs(20), || async move {
        dead_letter_count(stream).await == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    let dead = dead_letters_of(stream).await.remove(0);
    assert!(dead.reason.len() <= 1024, "{} bytes", dead.reason.len());
    assert!(
        dead.reason.contains("invalid type: string \"xxx"),
        "{}",
        dead.reason
    );
    assert!(dead.reason.ends_with("bytes in all]"), "{}", dead.reason);
    assert_eq!(
        dead.data(),
        Some(huge.as_bytes()),
        "the payload itself is kept whole"
    );
    delete_stream(stream).await;
    t.cleanup().await;
}

/// A payload type whose `Deserialize` panics on negative numbers.
#[derive(Debug, serde::Serialize)]
struct Touchy(i64);

impl<'de> serde::Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Touchy, D::Error> {
        let n = i64::deserialize(d)?;
        assert!(n >= 0, "a negative Touchy: {n}");
        Ok(Touchy(n))
    }
}

struct TouchyHandler {
    stream: &'static str,
    handled: Arc<AtomicU64>,
}

impl Handler for TouchyHandler {
    type Payload = Touchy;

    fn stream(&self) -> &'static str {
        self.stream
    }

    fn group(&self) -> &'static str {
        "billing"
    }

    fn handle<'t>(&'t self, _tx: &'t mut Tx<'_>, _msg: Touchy) -> BoxFuture<'t, Result<(), Error>> {
        self.handled.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// A panic while decoding (in a message task, outside the handler) is
/// not a silently dead task with its entry stuck: the entry is
/// dead-lettered with the panic's message and the rest is handled.
async fn a_payload_whose_decoding_panics_is_dead_lettered_not_lost(backend: Backend) {
    let t = TestDb::new(backend).await;
    let stream = unique_stream("touchy");
    let mut c = conn().await;
    for n in ["5", "-1", "6"] {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("data")
            .arg(n)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let handled = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(TouchyHandler {
                stream,
                handled: Arc::clone(&handled),
            })
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    wait_for("a dead letter", Duration::from_secs(20), || async {
        dead_letter_count(stream).await == 1 && pending(stream).await == 0
    })
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();
    assert_eq!((s.processed, s.dead_lettered), (2, 1), "{s:?}");
    assert_eq!(handled.load(Ordering::Relaxed), 2);
    let dead = dead_letters_of(stream).await;
    assert!(
        dead[0].reason.contains("panicked: a negative Touchy: -1"),
        "{}",
        dead[0].reason
    );
    delete_stream(stream).await;
    t.cleanup().await;
}

on_every_backend!(
    undecodable_entries_are_dead_lettered_and_the_rest_processed,
    a_replayed_dead_letter_reaches_only_the_group_that_failed,
    a_dead_letter_reason_is_capped_at_1_kib,
    a_payload_whose_decoding_panics_is_dead_lettered_not_lost,
);
