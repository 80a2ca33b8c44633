//! A consumer group's health: length, pending, lag, dead letters, consumers.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use crate::handle::{Conn, Redis};
use safesync_core::{Error, Result};

use crate::conn::{self, COMMAND_TIMEOUT};
use crate::entry::{get, int, items, pairs, text};
use crate::keys::{dead_letter_key, last_error_key, legacy_dead_letter_key};
use crate::worker::{FailedDelivery, parse_last_error};

/// A snapshot of a stream and one of its consumer groups, from
/// [`health`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Entries in the stream (`XLEN`).
    pub length: u64,
    /// Entries delivered to the group and not acknowledged yet.
    pub pending: u64,
    /// The longest idle time of a pending entry (time since it was last
    /// delivered: what `claim_idle` is compared with), whatever its id;
    /// `None` when nothing is pending.
    pub oldest_pending_idle: Option<Duration>,
    /// The group's dead letters: entries in `{<stream>}:dead:<group>`
    /// ([`dead_letter_key`](crate::dead_letter_key)).
    pub dead_letters: u64,
    /// Entries in the dead-letter key every group shared before dead
    /// letters were kept per group, `<stream>:dead` (all groups'; 0 once it
    /// is emptied by replaying or deleting them). Nothing is added to it.
    pub legacy_dead_letters: u64,
    /// The group's consumers.
    pub consumers: Vec<ConsumerHealth>,
    /// Entries not yet delivered to the group: Redis 7's `lag`; on older
    /// servers (or when Redis cannot tell, after deletions) `Some(0)` when
    /// the group has read up to the newest entry, `None` otherwise.
    pub lag: Option<u64>,
    /// The group's last failed delivery, by any of its workers (entry id,
    /// delivery, reason, consumer, when), from the small hash
    /// `{<stream>}:last-error:<group>` each failure overwrites; `None`
    /// when no worker recorded one. It stays after the entry is handled
    /// or dead-lettered: compare its `at` with the time to judge it.
    pub last_error: Option<FailedDelivery>,
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

/// The replies of `health`'s pipeline: three lengths, the consumers, the
/// last-error hash.
type Replies = (u64, u64, Value, HashMap<String, String>);

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
/// if let Some(e) = &h.last_error {
///     println!("last error: {} on delivery {}: {}", e.id, e.delivery, e.reason);
/// }
/// # Ok(()) }
/// ```
pub async fn health(redis: &Redis, stream: &str, group: &str) -> Result<Health> {
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

    // Keys of the stream's slot only (a cluster refuses a pipeline over
    // two); the older shared dead-letter key is in a slot of its own.
    let (length, dead_letters, consumers, last_error): Replies = redis::pipe()
        .cmd("XLEN")
        .arg(stream)
        .cmd("XLEN")
        .arg(dead_letter_key(stream, group))
        .cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .cmd("HGETALL")
        .arg(last_error_key(stream, group))
        .query_async(&mut c)
        .await
        .map_err(|e| conn::redis_err(op("XLEN/XINFO CONSUMERS/HGETALL"), e))?;
    let legacy_key = legacy_dead_letter_key(stream);
    let legacy_dead_letters: u64 = redis::cmd("XLEN")
        .arg(&legacy_key)
        .query_async(&mut c)
        .await
        .map_err(|e| conn::redis_err(format!("XLEN on `{legacy_key}`"), e))?;

    let oldest_pending_idle = if pending == 0 {
        None
    } else {
        longest_idle(&mut c, stream, group).await?
    };

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
        legacy_dead_letters,
        consumers,
        lag,
        last_error: parse_last_error(stream, group, last_error),
    })
}

/// The longest idle time of an entry pending in `group`: `XPENDING … IDLE
/// t - + 100` lists only entries idle at least `t` ms, so asking again
/// above the longest seen ends, in a few rounds, with the longest of all
/// (at most 32 rounds; Redis scans the pending list for each).
async fn longest_idle(c: &mut Conn, stream: &str, group: &str) -> Result<Option<Duration>> {
    let mut longest = None;
    let mut at_least = 0;
    for _ in 0..32 {
        let page: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg("IDLE")
            .arg(at_least)
            .arg("-")
            .arg("+")
            .arg(100)
            .query_async(c)
            .await
            .map_err(|e| conn::redis_err(format!("XPENDING on `{stream}`"), e))?;
        let Some(ms) = max_idle_ms(page) else { break };
        longest = Some(Duration::from_millis(ms));
        at_least = ms + 1;
    }
    Ok(longest)
}

/// The largest idle time (ms) in a reply of the extended `XPENDING`:
/// `[[id, consumer, idle ms, deliveries], …]`.
fn max_idle_ms(page: Value) -> Option<u64> {
    items(page)?
        .into_iter()
        .filter_map(items)
        .filter_map(|e| e.get(2).and_then(int))
        .filter_map(|ms| u64::try_from(ms).ok())
        .max()
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
    redis: &Redis,
    stream: &str,
    group: &str,
    idle_longer_than: Duration,
) -> Result<Vec<String>> {
    remove_idle_consumers_except(redis, stream, group, idle_longer_than, None).await
}

/// [`remove_idle_consumers`], sparing the consumer named `except` (a
/// worker's own, idle between its reads but alive).
pub(crate) async fn remove_idle_consumers_except(
    redis: &Redis,
    stream: &str,
    group: &str,
    idle_longer_than: Duration,
    except: Option<&str>,
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
        if consumer.pending > 0
            || consumer.idle <= idle_longer_than
            || except == Some(consumer.name.as_str())
        {
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

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::max_idle_ms;

    fn entry(id: &str, idle: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(id.into()),
            Value::BulkString(b"c".to_vec()),
            Value::Int(idle),
            Value::Int(1),
        ])
    }

    #[test]
    fn the_longest_idle_is_the_maximum_not_the_first() {
        let page = Value::Array(vec![entry("1-0", 5), entry("2-0", 900), entry("3-0", 40)]);
        assert_eq!(max_idle_ms(page), Some(900));
        assert_eq!(max_idle_ms(Value::Array(vec![])), None);
    }
}
