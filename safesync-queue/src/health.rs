//! A consumer group's health: length, pending, lag, dead letters, consumers.

use std::time::Duration;

use redis::{Client, Value};
use safesync_core::{Error, Result};

use crate::conn::{self, COMMAND_TIMEOUT};
use crate::dead_letter::dead_letter_key;
use crate::entry::{get, int, items, pairs, text};

/// A snapshot of a stream and one of its consumer groups, from
/// [`health`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Entries in the stream (`XLEN`).
    pub length: u64,
    /// Entries delivered to the group and not acknowledged yet.
    pub pending: u64,
    /// Idle time of the oldest pending entry (lowest id); `None` when
    /// nothing is pending.
    pub oldest_pending_idle: Option<Duration>,
    /// Entries in the dead-letter stream `<stream>:dead`.
    pub dead_letters: u64,
    /// The group's consumers.
    pub consumers: Vec<ConsumerHealth>,
    /// Entries not yet delivered to the group: Redis 7's `lag`; on older
    /// servers (or when Redis cannot tell, after deletions) `Some(0)` when
    /// the group has read up to the newest entry, `None` otherwise.
    pub lag: Option<u64>,
}

/// One consumer of a group, in [`Health::consumers`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerHealth {
    /// The consumer's name.
    pub name: String,
    /// Entries delivered to it and not acknowledged yet.
    pub pending: u64,
    /// Time since it last read or claimed.
    pub idle: Duration,
}

/// Reads the health of `group` on `stream`.
///
/// A stream or group that does not exist is [`Error::NotFound`] naming it.
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// let h = safesync_queue::health(&redis, "orders", "billing").await?;
/// println!(
///     "{} pending, lag {:?}, oldest idle {:?}, {} dead, {} consumers",
///     h.pending,
///     h.lag,
///     h.oldest_pending_idle,
///     h.dead_letters,
///     h.consumers.len()
/// );
/// # Ok(()) }
/// ```
pub async fn health(redis: &Client, stream: &str, group: &str) -> Result<Health> {
    let mut c = conn::connect(redis, COMMAND_TIMEOUT).await?;
    let op = |what: &str| format!("{what} on `{stream}`");
    let groups: Value = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut c)
        .await
    {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => {
            return Err(Error::NotFound {
                table: None,
                key: Some(format!("stream `{stream}`")),
            });
        }
        Err(e) => return Err(conn::redis_err(op("XINFO GROUPS"), e)),
    };
    let bad = |what: &str| Error::Decode {
        what: format!("the reply to {what} on `{stream}`"),
        reason: "unexpected shape".to_owned(),
    };
    let info = items(groups)
        .ok_or_else(|| bad("XINFO GROUPS"))?
        .into_iter()
        .filter_map(pairs)
        .find(|g| get(g, "name").and_then(text).as_deref() == Some(group))
        .ok_or_else(|| Error::NotFound {
            table: None,
            key: Some(format!("consumer group `{group}` of stream `{stream}`")),
        })?;
    let count = |v: Option<&Value>| v.and_then(int).and_then(|i| u64::try_from(i).ok());
    let pending = count(get(&info, "pending")).unwrap_or(0);

    let (length, dead_letters, oldest, consumers): (u64, u64, Value, Value) = redis::pipe()
        .cmd("XLEN")
        .arg(stream)
        .cmd("XLEN")
        .arg(dead_letter_key(stream))
        .cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(1)
        .cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(&mut c)
        .await
        .map_err(|e| conn::redis_err(op("XLEN/XPENDING/XINFO CONSUMERS"), e))?;

    // [[id, consumer, idle ms, deliveries]]
    let oldest_pending_idle = items(oldest)
        .and_then(|list| list.into_iter().next())
        .and_then(items)
        .and_then(|e| e.get(2).and_then(int))
        .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));

    let consumers = items(consumers)
        .ok_or_else(|| bad("XINFO CONSUMERS"))?
        .into_iter()
        .filter_map(pairs)
        .map(|c| ConsumerHealth {
            name: get(&c, "name").and_then(text).unwrap_or_default(),
            pending: count(get(&c, "pending")).unwrap_or(0),
            idle: Duration::from_millis(count(get(&c, "idle")).unwrap_or(0)),
        })
        .collect();

    let lag = if let Some(lag) = count(get(&info, "lag")) {
        Some(lag)
    } else {
        let last_delivered = get(&info, "last-delivered-id").and_then(text);
        let stream_info: Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(stream)
            .query_async(&mut c)
            .await
            .map_err(|e| conn::redis_err(op("XINFO STREAM"), e))?;
        let last_generated =
            pairs(stream_info).and_then(|s| get(&s, "last-generated-id").and_then(text));
        (last_delivered.is_some() && last_delivered == last_generated).then_some(0)
    };

    Ok(Health {
        length,
        pending,
        oldest_pending_idle,
        dead_letters,
        consumers,
        lag,
    })
}

/// Removes the consumers of `group` that have been idle longer than
/// `idle_longer_than` and have nothing pending; returns their names.
///
/// Deleting a consumer that still has pending entries would lose them, so
/// the check and the delete run together in one server-side script: a
/// consumer that picked up an entry in the meantime is kept.
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// use std::time::Duration;
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// let removed =
///     safesync_queue::remove_idle_consumers(&redis, "orders", "billing", Duration::from_secs(3600))
///         .await?;
/// println!("removed {removed:?}");
/// # Ok(()) }
/// ```
pub async fn remove_idle_consumers(
    redis: &Client,
    stream: &str,
    group: &str,
    idle_longer_than: Duration,
) -> Result<Vec<String>> {
    const DELETE_IF_NOTHING_PENDING: &str = r"
        local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
        if #p == 0 then
            return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
        end
        return -1
    ";
    let h = health(redis, stream, group).await?;
    let mut c = conn::connect(redis, COMMAND_TIMEOUT).await?;
    let mut removed = Vec::new();
    for consumer in h.consumers {
        if consumer.pending > 0 || consumer.idle <= idle_longer_than {
            continue;
        }
        let outcome: i64 = redis::cmd("EVAL")
            .arg(DELETE_IF_NOTHING_PENDING)
            .arg(1)
            .arg(stream)
            .arg(group)
            .arg(&consumer.name)
            .query_async(&mut c)
            .await
            .map_err(|e| conn::redis_err(format!("XGROUP DELCONSUMER on `{stream}`"), e))?;
        if outcome >= 0 {
            removed.push(consumer.name);
        }
    }
    Ok(removed)
}
