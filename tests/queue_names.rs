//! Stream and group names chosen at runtime (`bill.on(stream, group)`,
//! `Routed`), with every SQL backend's `Db`: one handler run on two
//! differently named streams by one worker consumes each message of each
//! stream exactly once, and names that cannot work are `Error::Config` from
//! `run`, before any work.

#![allow(clippy::manual_assert, clippy::too_many_lines)]
#![allow(clippy::wildcard_imports)] // reason: the shared queue helpers of tests/common/queue.rs

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::queue::*;
use common::{Backend, TestDb};
use safesync::prelude::*;
use safesync::redis;
use safesync::{CancellationToken, Routed, SendOptions, Worker};

/// The attribute's names are the default, never read here: every test runs
/// it under names of its own.
#[safesync::queue_handler(stream = "safesync-test:names-default", group = "billing")]
async fn bill_once(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
    let mut order = Order::find(tx, &msg.order_id)
        .await?
        .ok_or_else(Error::not_found)?;
    order.status = "processed".into();
    order.hits += 1;
    order.update(tx).await?;
    Ok(())
}

/// `XADD <stream> <id> data <json>`: the same entry ids on two streams, so
/// that a ledger keyed by the wrong stream name would take the second
/// stream's entries for duplicates of the first's.
async fn add_with_id(stream: &str, id: &str, order_id: i64) {
    let json = serde_json::to_string(&OrderPlaced { order_id }).unwrap();
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg(id)
        .arg(safesync::queue::DATA_FIELD)
        .arg(json)
        .query_async(&mut conn().await)
        .await
        .unwrap();
}

async fn one_handler_on_two_runtime_streams_consumes_each_message_once(backend: Backend) {
    // Orders 1..=N go to stream `eu`, N+1..=2N to stream `us`; M more through
    // a plain handler on a third name.
    const N: i64 = 60;
    const M: i64 = 40;
    const SAME_IDS: i64 = 20;
    let t = setup_orders(backend, 2 * N).await;
    let env = common::unique("names");
    let (eu, us, mail_key) = (
        format!("{env}.eu.orders"),
        format!("{env}.us.orders"),
        format!("{env}.mail"),
    );
    let on_eu = bill_once.on(eu.as_str(), "billing");
    let on_us = bill_once.on(us.as_str(), "billing");
    assert_eq!(
        (on_eu.stream_name(), on_eu.group_name()),
        (eu.as_str(), "billing")
    );

    // The first entries of both streams have the same ids.
    for i in 1..=SAME_IDS {
        add_with_id(&eu, &format!("1-{i}"), i).await;
        add_with_id(&us, &format!("1-{i}"), N + i).await;
    }
    // The rest through the typed producers of the runtime names.
    let mut redis_conn = conn().await;
    let producer_us = bill_once::stream_named(us.clone());
    for i in SAME_IDS + 1..=N {
        let msg = OrderPlaced { order_id: i };
        on_eu
            .stream()
            .send_on(&mut redis_conn, &msg, &SendOptions::default())
            .await
            .unwrap();
        let msg = OrderPlaced { order_id: N + i };
        producer_us
            .send_on(&mut redis_conn, &msg, &SendOptions::default())
            .await
            .unwrap();
    }
    // A hand-written plain handler under a runtime name: its own stream
    // (`mail_key` is not it) is ignored.
    let behaviour = Arc::new(Behaviour::default());
    let mail = Routed::new(
        plain(unique_stream("unused"), &behaviour),
        mail_key.as_str(),
        "billing",
    );
    let producer_mail = mail.stream();
    for i in 1..=M {
        producer_mail
            .send_on(
                &mut redis_conn,
                &OrderPlaced { order_id: i },
                &SendOptions::default(),
            )
            .await
            .unwrap();
    }

    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(t.db.clone(), redis_client())
            .handle(on_eu)
            .handle(on_us)
            .handle(mail)
            .concurrency(4)
            .block(Duration::from_millis(100))
            .run(stop.clone()),
    );
    let (db, beh) = (&t.db, &behaviour);
    let (eu, us, mail_key) = (eu.as_str(), us.as_str(), mail_key.as_str());
    wait_for(
        "every message of the three streams handled, nothing pending",
        Duration::from_secs(60),
        || async move {
            processed_count(db).await == usize::try_from(2 * N).unwrap()
                && beh.total.load(Ordering::Relaxed) >= u64::try_from(M).unwrap()
                && pending(eu).await + pending(us).await + pending(mail_key).await == 0
        },
    )
    .await;
    stop.cancel();
    let s = worker.await.unwrap().unwrap();

    let rows = orders(&t.db).await;
    for id in 1..=2 * N {
        assert_eq!(
            rows.get(&id),
            Some(&("processed".to_owned(), 1)),
            "{backend:?}: order {id} applied once"
        );
    }
    let calls = behaviour.calls.lock().unwrap().clone();
    for id in 1..=M {
        assert_eq!(calls.get(&id), Some(&1), "{backend:?}: mail {id}");
    }
    assert_eq!(
        (
            s.processed,
            s.acked,
            s.failed,
            s.duplicates,
            s.dead_lettered
        ),
        (
            u64::try_from(2 * N + M).unwrap(),
            u64::try_from(2 * N + M).unwrap(),
            0,
            0,
            0
        ),
        "{backend:?}: {s:?}"
    );
    assert_eq!(ledger_rows(&t.db).await, 2 * N, "{backend:?}");
    for stream in [eu, us, mail_key] {
        let h = safesync::queue::health(&redis_client(), stream, "billing")
            .await
            .unwrap();
        assert_eq!(
            (h.pending, h.dead_letters, h.lag),
            (0, 0, Some(0)),
            "{stream}"
        );
        delete_stream(stream).await;
    }
}

/// `run` with `worker`'s handlers: the `Error::Config` text; nothing is
/// created on Redis for `untouched`. Panics when `run` does not fail within
/// 20 s (it started).
async fn config_error(worker: Worker, untouched: &str) -> String {
    // A worker that starts instead runs until stopped: bounded here.
    let handlers = format!("{worker:?}");
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        worker.run(CancellationToken::new()),
    )
    .await
    .unwrap_or_else(|_| panic!("`run` started instead of failing: {handlers}"))
    .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(untouched)
        .query_async(&mut conn().await)
        .await
        .unwrap();
    assert_eq!(exists, 0, "{untouched} was created: {err}");
    err.to_string()
}

async fn runtime_names_that_cannot_work_are_config_errors(backend: Backend) {
    let t = TestDb::new(backend).await;
    let worker = || Worker::new(t.db.clone(), redis_client());
    let a = common::unique("names_cfg");

    let text = config_error(worker().handle(bill_once.on("", "billing")), &a).await;
    assert!(
        text.contains("the stream name `` of a handler must be 1 to 255 bytes long"),
        "{text}"
    );
    let text = config_error(worker().handle(bill_once.on(a.as_str(), "")), &a).await;
    assert!(
        text.contains("the group name `` of a handler must be 1 to 255 bytes long"),
        "{text}"
    );

    // The dead letters and the replay stream of `a`, as a stream: shaped
    // like a stream's own key, whether or not `a` is handled here.
    for own in [
        safesync::queue::dead_letter_key(&a, "billing"),
        safesync::queue::replay_key(&a, "billing"),
    ] {
        let text = config_error(
            worker()
                .handle(bill_once.on(a.as_str(), "billing"))
                .handle(bill_once.on(own.as_str(), "audit")),
            &a,
        )
        .await;
        assert!(
            text.contains(&format!(
                "the stream name `{own}` of the handler in group `audit` is shaped like"
            )),
            "{text}"
        );
    }
    // The former shared dead-letter key of `a`, while `a` is handled too.
    let legacy = format!("{a}:dead");
    let text = config_error(
        worker()
            .handle(bill_once.on(a.as_str(), "billing"))
            .handle(bill_once.on(legacy.as_str(), "billing")),
        &a,
    )
    .await;
    assert!(
        text.contains(&format!(
            "the stream name `{legacy}` of the handler in group `billing` is the dead-letter \
             key of stream `{a}` in group `billing`"
        )),
        "{text}"
    );

    // The same runtime stream and group twice.
    let text = config_error(
        worker()
            .handle(bill_once.on(a.as_str(), "billing"))
            .handle(bill_once.on(a.as_str(), "billing")),
        &a,
    )
    .await;
    assert!(
        text.contains(&format!(
            "two handlers consume stream `{a}` in group `billing`"
        )),
        "{text}"
    );
}

on_every_backend!(
    one_handler_on_two_runtime_streams_consumes_each_message_once,
    runtime_names_that_cannot_work_are_config_errors,
);
