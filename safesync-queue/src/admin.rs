//! Operations an operator runs on a stream: its groups, a group's pending
//! entries, one dead letter, and purging a group's dead letters. The
//! `safesync` CLI is built on these and on [`health`](crate::health),
//! [`dead_letters`](crate::dead_letters) and
//! [`replay_dead_letter`](crate::replay_dead_letter).

use std::time::Duration;

use redis::{RedisError, Value};

use crate::handle::Redis;
use safesync_core::{Error, Result};

use crate::conn::{self, COMMAND_TIMEOUT};
use crate::dead_letter::{self, DeadLetter};
use crate::entry::{get, int, items, pairs, text};
use crate::keys::{dead_letter_key, legacy_dead_letter_key};

/// One entry delivered to a consumer group and not acknowledged yet, from
/// [`pending_entries`].
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// use std::time::Duration;
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// let stuck = safesync_queue::pending_entries(&redis, "orders", "billing", 1000)
///     .await?
///     .into_iter()
///     .filter(|p| p.idle > Duration::from_secs(60) && p.deliveries > 1);
/// for p in stuck {
///     println!("{} stuck on {}", p.id, p.consumer);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingEntry {
    /// The entry's id in the stream.
    pub id: String,
    /// The consumer it was last delivered to.
    pub consumer: String,
    /// Time since it was last delivered.
    pub idle: Duration,
    /// How many times it has been delivered.
    pub deliveries: u64,
}

/// `NotFound` naming the stream.
fn no_stream(stream: &str) -> Error {
    Error::NotFound {
        table: None,
        key: Some(format!("stream `{stream}`")),
    }
}

/// `NotFound` naming the group.
fn no_group(stream: &str, group: &str) -> Error {
    Error::NotFound {
        table: None,
        key: Some(format!("consumer group `{group}` of stream `{stream}`")),
    }
}

/// True for Redis's answer about a key that does not exist.
fn is_no_such_key(e: &RedisError) -> bool {
    e.to_string().contains("no such key")
}

/// The consumer groups of `stream`, in the order Redis lists them
/// (`XINFO GROUPS`). A stream that does not exist is [`Error::NotFound`].
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// for group in safesync_queue::groups(&redis, "orders").await? {
///     let h = safesync_queue::health(&redis, "orders", &group).await?;
///     println!("{group}: {} pending", h.pending);
/// }
/// # Ok(()) }
/// ```
pub async fn groups(redis: &Redis, stream: &str) -> Result<Vec<String>> {
    let mut c = conn::connect(redis, COMMAND_TIMEOUT).await?;
    let reply: Value = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut c)
        .await
    {
        Ok(v) => v,
        Err(e) if is_no_such_key(&e) => return Err(no_stream(stream)),
        Err(e) => return Err(conn::redis_err(format!("XINFO GROUPS on `{stream}`"), e)),
    };
    let groups = items(reply).ok_or_else(|| Error::Decode {
        what: format!("the reply to XINFO GROUPS on `{stream}`"),
        reason: "unexpected shape".to_owned(),
    })?;
    Ok(groups
        .into_iter()
        .filter_map(pairs)
        .filter_map(|g| get(&g, "name").and_then(text))
        .collect())
}

/// The entries pending in `group` on `stream`, oldest id first, at most
/// `limit` of them (read in pages of 500 with `XPENDING … - + 500`).
///
/// A stream or group that does not exist is [`Error::NotFound`] naming it.
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// for p in safesync_queue::pending_entries(&redis, "orders", "billing", 100).await? {
///     println!("{} on {} idle {:?}, delivered {}", p.id, p.consumer, p.idle, p.deliveries);
/// }
/// # Ok(()) }
/// ```
pub async fn pending_entries(
    redis: &Redis,
    stream: &str,
    group: &str,
    limit: usize,
) -> Result<Vec<PendingEntry>> {
    const PAGE: usize = 500;
    let mut c = conn::connect(redis, COMMAND_TIMEOUT).await?;
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    while out.len() < limit {
        let want = PAGE.min(limit - out.len());
        let page: Value = match redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg(&start)
            .arg("+")
            .arg(want)
            .query_async(&mut c)
            .await
        {
            Ok(v) => v,
            Err(e) if e.code() == Some("NOGROUP") => {
                let exists: bool = redis::cmd("EXISTS")
                    .arg(stream)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| conn::redis_err(format!("EXISTS `{stream}`"), e))?;
                return Err(if exists {
                    no_group(stream, group)
                } else {
                    no_stream(stream)
                });
            }
            Err(e) => return Err(conn::redis_err(format!("XPENDING on `{stream}`"), e)),
        };
        let entries = parse_pending(page).ok_or_else(|| Error::Decode {
            what: format!("the reply to XPENDING on `{stream}`"),
            reason: "unexpected shape".to_owned(),
        })?;
        let full = entries.len() == want;
        let Some(last) = entries.last() else { break };
        start = format!("({}", last.id);
        out.extend(entries);
        if !full {
            break;
        }
    }
    Ok(out)
}

/// The extended `XPENDING` reply: `[[id, consumer, idle ms, deliveries], …]`.
fn parse_pending(page: Value) -> Option<Vec<PendingEntry>> {
    items(page)?
        .into_iter()
        .map(|e| {
            let e = items(e)?;
            let count = |i: usize| e.get(i).and_then(int).and_then(|n| u64::try_from(n).ok());
            Some(PendingEntry {
                id: text(e.first()?)?,
                consumer: text(e.get(1)?)?,
                idle: Duration::from_millis(count(2)?),
                deliveries: count(3)?,
            })
        })
        .collect()
}

/// The dead letter `id` of `group` on `stream` (an id from
/// [`dead_letters`](crate::dead_letters)); [`Error::NotFound`] when the
/// group has none with that id.
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// let dead = safesync_queue::dead_letter(&redis, "orders", "billing", "1700000000000-0").await?;
/// println!("{}: {:?}", dead.reason, dead.data().map(String::from_utf8_lossy));
/// # Ok(()) }
/// ```
pub async fn dead_letter(redis: &Redis, stream: &str, group: &str, id: &str) -> Result<DeadLetter> {
    crate::dead_letters(redis, stream, group)
        .await?
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| Error::NotFound {
            table: None,
            key: Some(format!(
                "dead letter {id} of group `{group}` in `{}`",
                dead_letter_key(stream, group)
            )),
        })
}

/// Deletes the dead letters of `group` on `stream` that are there when it
/// reads them (those of its own key, and the group's ones in the older
/// shared key `<stream>:dead`); returns how many it deleted. A dead letter
/// added meanwhile stays. Other groups' dead letters are never touched.
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// let purged = safesync_queue::purge_dead_letters(&redis, "orders", "billing").await?;
/// println!("purged {purged}");
/// # Ok(()) }
/// ```
pub async fn purge_dead_letters(redis: &Redis, stream: &str, group: &str) -> Result<u64> {
    let mut c = conn::connect(redis, COMMAND_TIMEOUT).await?;
    let own_key = dead_letter_key(stream, group);
    let legacy_key = legacy_dead_letter_key(stream);
    let own: Vec<String> = dead_letter::all_entries(&mut c, &own_key)
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    let legacy: Vec<String> = dead_letter::all_entries(&mut c, &legacy_key)
        .await?
        .into_iter()
        .map(dead_letter::parse)
        .filter(|d| d.group == group)
        .map(|d| d.id)
        .collect();
    let mut deleted = 0;
    for (key, ids) in [(&own_key, own), (&legacy_key, legacy)] {
        for chunk in ids.chunks(500) {
            let n: u64 = redis::cmd("XDEL")
                .arg(key)
                .arg(chunk)
                .query_async(&mut c)
                .await
                .map_err(|e| conn::redis_err(format!("XDEL on `{key}`"), e))?;
            deleted += n;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::{PendingEntry, parse_pending};

    #[test]
    fn pending_replies_parse_into_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::BulkString(b"w1".to_vec()),
            Value::Int(1500),
            Value::Int(3),
        ])]);
        assert_eq!(
            parse_pending(reply),
            Some(vec![PendingEntry {
                id: "1-0".into(),
                consumer: "w1".into(),
                idle: std::time::Duration::from_millis(1500),
                deliveries: 3,
            }])
        );
        assert_eq!(parse_pending(Value::Array(vec![Value::Int(1)])), None);
        let short = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::BulkString(b"w1".to_vec()),
            Value::Int(1500),
        ])]);
        assert_eq!(parse_pending(short), None, "a reply without deliveries");
    }
}
