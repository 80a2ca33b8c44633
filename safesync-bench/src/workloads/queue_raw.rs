//! The raw queue baselines, on plain redis and sqlx.
//!
//! - `simple` (W5 baseline 1): each worker loops `XREADGROUP COUNT 1` →
//!   transaction → commit → one `XACK`.
//! - `tuned` (W5 baseline 2, and W5q's): one reader with batched reads
//!   (`COUNT` up to the free handler slots, at most 64), concurrent handler
//!   tasks (W5) or inline decoding (W5q), and one acker sending many ids
//!   per `XACK`.
//!
//! Neither keeps a ledger: an entry whose ack is lost after its commit
//! would be processed twice. That guarantee is part of what the framework's
//! figure pays for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadReply};
use tokio::sync::{Barrier, Semaphore, mpsc};

use crate::driver::Measured;
use crate::env::{BeginWrite as _, BoxError, Env, on_pool};
use crate::workloads::Spec;
use crate::workloads::queue::{GROUP, MARK_SQL, OrderPlaced, RUN_TIMEOUT, Seen, stream_of};

/// Most entries one tuned read asks for.
pub(crate) const MAX_BATCH: usize = 64;
/// Most ids in one `XACK`.
const MAX_ACKS: usize = 512;
/// How long a read blocks when the stream is empty for now.
const BLOCK_MS: u64 = 100;

/// What the tasks of a raw run share.
struct Progress {
    m: u64,
    read: AtomicU64,
    acked: AtomicU64,
    end: OnceLock<Instant>,
    failure: Mutex<Option<String>>,
}

impl Progress {
    fn new(m: u64) -> Arc<Progress> {
        Arc::new(Progress {
            m,
            read: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            end: OnceLock::new(),
            failure: Mutex::new(None),
        })
    }

    fn all_read(&self) -> bool {
        self.read.load(Ordering::Relaxed) >= self.m || self.failed()
    }

    fn acked(&self, n: u64) {
        if self.acked.fetch_add(n, Ordering::SeqCst) + n >= self.m {
            let _ = self.end.set(Instant::now());
        }
    }

    fn fail(&self, e: &BoxError) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert_with(|| e.to_string());
        }
    }

    fn failed(&self) -> bool {
        self.failure.lock().map_or(true, |f| f.is_some())
    }

    /// Waits for the last ack; the measured seconds since `start`, and the
    /// CPU time since the `cpu` reading.
    async fn wait(
        &self,
        start: Instant,
        cpu: Option<Duration>,
    ) -> Result<(f64, Option<Duration>), BoxError> {
        loop {
            if let Some(e) = self.failure.lock().ok().and_then(|f| f.clone()) {
                return Err(e.into());
            }
            if let Some(end) = self.end.get() {
                return Ok((
                    end.duration_since(start).as_secs_f64(),
                    crate::cpu::since(cpu),
                ));
            }
            if start.elapsed() > RUN_TIMEOUT {
                return Err(format!("not drained within {RUN_TIMEOUT:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn decode(entry: &StreamId) -> Result<OrderPlaced, BoxError> {
    match entry.map.get(safesync::queue::DATA_FIELD) {
        Some(Value::BulkString(b)) => Ok(serde_json::from_slice(b)?),
        _ => Err(format!("entry {} has no `data` field", entry.id).into()),
    }
}

async fn read(
    conn: &mut MultiplexedConnection,
    stream: &str,
    consumer: &str,
    count: usize,
) -> Result<Vec<StreamId>, BoxError> {
    let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(BLOCK_MS)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(conn)
        .await?;
    Ok(reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|k| k.ids)
        .collect())
}

async fn create_group(redis: &redis::Client, stream: &str) -> Result<(), BoxError> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// Waits for the tasks of a finished run (idle readers end within one
/// block time).
async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
}

/// Baseline 1: one message at a time per worker.
pub(crate) async fn simple(
    env: &Env,
    redis: &redis::Client,
    spec: &Spec,
    seen: &Arc<Seen>,
) -> Result<Measured, BoxError> {
    let stream = stream_of(env);
    create_group(redis, &stream).await?;
    let progress = Progress::new(spec.ops);
    let barrier = Arc::new(Barrier::new(spec.workers + 1));
    let mark = env.sql(MARK_SQL);
    let mut tasks = Vec::new();
    for w in 0..spec.workers {
        let (redis, pool, stream, mark) = (
            redis.clone(),
            env.pool.clone(),
            stream.clone(),
            mark.clone(),
        );
        let (progress, barrier, seen) = (
            Arc::clone(&progress),
            Arc::clone(&barrier),
            Arc::clone(seen),
        );
        tasks.push(tokio::spawn(async move {
            let conn = redis.get_multiplexed_async_connection().await;
            barrier.wait().await;
            let work = async {
                let mut conn = conn?;
                let consumer = format!("c{w}");
                on_pool!(&pool, |p| {
                    while !progress.all_read() {
                        for entry in read(&mut conn, &stream, &consumer, 1).await? {
                            progress.read.fetch_add(1, Ordering::Relaxed);
                            let msg = decode(&entry)?;
                            let mut tx = p.begin_write().await?;
                            let n = sqlx::query(&mark)
                                .bind(msg.order_id)
                                .execute(&mut *tx)
                                .await?
                                .rows_affected();
                            if n != 1 {
                                return Err(format!("order {} is missing", msg.order_id).into());
                            }
                            tx.commit().await?;
                            seen.record(msg.order_id);
                            let acked: u64 = redis::cmd("XACK")
                                .arg(&stream)
                                .arg(GROUP)
                                .arg(&entry.id)
                                .query_async(&mut conn)
                                .await?;
                            progress.acked(acked);
                        }
                    }
                });
                Ok::<_, BoxError>(())
            };
            if let Err(e) = work.await {
                progress.fail(&e);
            }
        }));
    }
    barrier.wait().await;
    let cpu = crate::cpu::process_cpu();
    let start = Instant::now();
    let waited = progress.wait(start, cpu).await;
    join_all(tasks).await;
    let (seconds, cpu) = waited?;
    Ok(Measured {
        ops: progress.acked.load(Ordering::SeqCst),
        seconds,
        cpu,
        ..Measured::default()
    })
}

/// The acker of the tuned baseline: many ids per `XACK`.
async fn acker(
    mut conn: MultiplexedConnection,
    stream: String,
    mut ids: mpsc::UnboundedReceiver<String>,
    progress: Arc<Progress>,
) -> Result<(), BoxError> {
    let mut batch = Vec::with_capacity(MAX_ACKS);
    while let Some(first) = ids.recv().await {
        batch.push(first);
        while batch.len() < MAX_ACKS {
            match ids.try_recv() {
                Ok(id) => batch.push(id),
                Err(_) => break,
            }
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&stream).arg(GROUP).arg(&batch);
        let acked: u64 = cmd.query_async(&mut conn).await?;
        batch.clear();
        progress.acked(acked);
        if progress.acked.load(Ordering::SeqCst) >= progress.m {
            break;
        }
    }
    Ok(())
}

/// Baseline 2: batched reads, concurrent handlers (W5) or inline decoding
/// (W5q), batched acks.
pub(crate) async fn tuned(
    env: &Env,
    redis: &redis::Client,
    spec: &Spec,
    seen: &Arc<Seen>,
    db_work: bool,
) -> Result<Measured, BoxError> {
    let stream = stream_of(env);
    create_group(redis, &stream).await?;
    let progress = Progress::new(spec.ops);
    let mut reader_conn = redis.get_multiplexed_async_connection().await?;
    let acker_conn = redis.get_multiplexed_async_connection().await?;
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<String>();
    let slots = Arc::new(Semaphore::new(spec.workers));
    let mark = env.sql(MARK_SQL);
    let cpu = crate::cpu::process_cpu();
    let start = Instant::now();
    let acker_task = {
        let progress = Arc::clone(&progress);
        let stream = stream.clone();
        tokio::spawn(async move {
            if let Err(e) = acker(acker_conn, stream, ack_rx, Arc::clone(&progress)).await {
                progress.fail(&e);
            }
        })
    };
    let reader_task = {
        let (progress, seen, pool) = (Arc::clone(&progress), Arc::clone(seen), env.pool.clone());
        tokio::spawn(async move {
            let work = async {
                while !progress.all_read() {
                    let mut permits = vec![Arc::clone(&slots).acquire_owned().await?];
                    while permits.len() < MAX_BATCH {
                        match Arc::clone(&slots).try_acquire_owned() {
                            Ok(p) => permits.push(p),
                            Err(_) => break,
                        }
                    }
                    let count = if db_work { permits.len() } else { MAX_BATCH };
                    let entries = read(&mut reader_conn, &stream, "c0", count).await?;
                    progress
                        .read
                        .fetch_add(entries.len() as u64, Ordering::Relaxed);
                    if !db_work {
                        for entry in entries {
                            seen.record(decode(&entry)?.order_id);
                            ack_tx.send(entry.id)?;
                        }
                        continue;
                    }
                    for (entry, permit) in entries.into_iter().zip(permits) {
                        let (pool, mark, ack_tx) = (pool.clone(), mark.clone(), ack_tx.clone());
                        let (progress, seen) = (Arc::clone(&progress), Arc::clone(&seen));
                        tokio::spawn(async move {
                            let _permit = permit;
                            let handled = async {
                                let msg = decode(&entry)?;
                                on_pool!(&pool, |p| {
                                    let mut tx = p.begin_write().await?;
                                    let n = sqlx::query(&mark)
                                        .bind(msg.order_id)
                                        .execute(&mut *tx)
                                        .await?
                                        .rows_affected();
                                    if n != 1 {
                                        return Err(
                                            format!("order {} is missing", msg.order_id).into()
                                        );
                                    }
                                    tx.commit().await?;
                                });
                                seen.record(msg.order_id);
                                ack_tx.send(entry.id)?;
                                Ok::<_, BoxError>(())
                            };
                            if let Err(e) = handled.await {
                                progress.fail(&e);
                            }
                        });
                    }
                }
                Ok::<_, BoxError>(())
            };
            if let Err(e) = work.await {
                progress.fail(&e);
            }
        })
    };
    let waited = progress.wait(start, cpu).await;
    join_all(vec![reader_task, acker_task]).await;
    let (seconds, cpu) = waited?;
    Ok(Measured {
        ops: progress.acked.load(Ordering::SeqCst),
        seconds,
        cpu,
        ..Measured::default()
    })
}

#[cfg(test)]
mod tests {
    use super::decode;
    use redis::Value;
    use redis::streams::StreamId;

    #[test]
    fn the_data_field_is_decoded() {
        let mut entry = StreamId {
            id: "1-0".into(),
            ..StreamId::default()
        };
        entry.map.insert(
            "data".into(),
            Value::BulkString(br#"{"order_id": 7}"#.to_vec()),
        );
        assert_eq!(decode(&entry).unwrap().order_id, 7);
        entry.map.clear();
        assert!(decode(&entry).is_err());
    }
}
