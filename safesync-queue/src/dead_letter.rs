//! Dead letters: entries that could not be decoded or kept failing, moved
//! to `<stream>:dead` with the reason, and how to replay them.

use redis::{Client, Value};
use safesync_core::{Error, Result};

use crate::conn::{self, COMMAND_TIMEOUT};
use crate::entry::{self, Entry};

/// Field of a dead letter: why the entry was moved.
const REASON: &str = "dead_reason";
/// Field of a dead letter: the delivery count when it was moved.
const DELIVERIES: &str = "dead_deliveries";
/// Field of a dead letter: the consumer group that gave up.
const GROUP: &str = "dead_group";
/// Field of a dead letter: the consumer that gave up.
const CONSUMER: &str = "dead_consumer";
/// Field of a dead letter: the entry's id in its own stream.
const ORIGINAL_ID: &str = "dead_original_id";

/// The fields appended to a dead letter, in order.
const META: [&str; 5] = [ORIGINAL_ID, GROUP, CONSUMER, DELIVERIES, REASON];

/// The key of `stream`'s dead-letter stream: `<stream>:dead`.
///
/// Under Redis Cluster, give the stream a hash tag (`{orders}`) so that
/// `{orders}:dead` lives in the same slot: moving an entry and replaying it
/// are transactions over both keys.
///
/// ```
/// assert_eq!(safesync_queue::dead_letter_key("orders"), "orders:dead");
/// ```
pub fn dead_letter_key(stream: &str) -> String {
    format!("{stream}:dead")
}

/// An entry of a dead-letter stream, from [`dead_letters`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the dead-letter stream (what [`replay_dead_letter`] takes).
    pub id: String,
    /// Its id in the original stream.
    pub original_id: String,
    /// The consumer group that gave up on it.
    pub group: String,
    /// The consumer that moved it.
    pub consumer: String,
    /// Why: what could not be decoded, or the handler's last error.
    pub reason: String,
    /// How many times it had been delivered.
    pub deliveries: u64,
    /// The original entry's fields, in order (names decoded lossily).
    pub fields: Vec<(String, Vec<u8>)>,
}

impl DeadLetter {
    /// The original `data` field (the JSON payload), if it had one.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), safesync_core::Error> {
    /// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// for dead in safesync_queue::dead_letters(&redis, "orders").await? {
    ///     let data = dead.data().map(String::from_utf8_lossy);
    ///     println!("{}: {} ({data:?})", dead.original_id, dead.reason);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn data(&self) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == crate::DATA_FIELD)
            .map(|(_, v)| v.as_slice())
    }
}

/// Every entry of `stream`'s dead-letter stream, oldest first.
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// let dead = safesync_queue::dead_letters(&redis, "orders").await?;
/// println!("{} dead letters", dead.len());
/// # Ok(()) }
/// ```
pub async fn dead_letters(redis: &Client, stream: &str) -> Result<Vec<DeadLetter>> {
    const PAGE: usize = 500;
    let key = dead_letter_key(stream);
    let mut c = conn::connect(redis, COMMAND_TIMEOUT).await?;
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: Value = redis::cmd("XRANGE")
            .arg(&key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut c)
            .await
            .map_err(|e| conn::redis_err(format!("XRANGE on `{key}`"), e))?;
        let entries = entry::entries(page).map_err(|reason| Error::Decode {
            what: format!("the reply to XRANGE on `{key}`"),
            reason,
        })?;
        let full = entries.len() == PAGE;
        let Some(last) = entries.last() else { break };
        start = format!("({}", last.id);
        out.extend(entries.into_iter().map(parse));
        if !full {
            break;
        }
    }
    Ok(out)
}

/// Puts dead letter `id` back on `stream` as a new entry with the
/// original fields, and removes it from the dead-letter stream, in one
/// transaction. Returns the new entry's id.
///
/// An `id` not in the dead-letter stream is [`Error::NotFound`].
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// for dead in safesync_queue::dead_letters(&redis, "orders").await? {
///     safesync_queue::replay_dead_letter(&redis, "orders", &dead.id).await?;
/// }
/// # Ok(()) }
/// ```
pub async fn replay_dead_letter(redis: &Client, stream: &str, id: &str) -> Result<String> {
    let key = dead_letter_key(stream);
    let not_found = || Error::NotFound {
        table: None,
        key: Some(format!("dead letter {id} in `{key}`")),
    };
    if !entry::is_entry_id(id) {
        return Err(not_found());
    }
    let mut c = conn::connect(redis, COMMAND_TIMEOUT).await?;
    let found: Value = redis::cmd("XRANGE")
        .arg(&key)
        .arg(id)
        .arg(id)
        .query_async(&mut c)
        .await
        .map_err(|e| conn::redis_err(format!("XRANGE on `{key}`"), e))?;
    let found = entry::entries(found).map_err(|reason| Error::Decode {
        what: format!("the reply to XRANGE on `{key}`"),
        reason,
    })?;
    let Some(dead) = found.into_iter().next() else {
        return Err(not_found());
    };
    let original = original_fields(dead.fields.unwrap_or_default());
    if original.is_empty() {
        // A stream entry needs a field; an empty dead letter cannot be one.
        return Err(Error::Decode {
            what: format!("dead letter {id} in `{key}`"),
            reason: "it has no original fields to replay".to_owned(),
        });
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    let add = pipe.cmd("XADD").arg(stream).arg("*");
    for (k, v) in &original {
        add.arg(k.as_slice()).arg(v.as_slice());
    }
    pipe.cmd("XDEL").arg(&key).arg(id);
    let (new_id, _deleted): (String, i64) = pipe
        .query_async(&mut c)
        .await
        .map_err(|e| conn::redis_err(format!("replay of {id} from `{key}` to `{stream}`"), e))?;
    Ok(new_id)
}

/// What the worker knows when it gives up on an entry.
pub(crate) struct Burial<'a> {
    pub(crate) stream: &'a str,
    pub(crate) group: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) deliveries: u64,
    pub(crate) reason: &'a str,
}

/// `MULTI; XADD <stream>:dead * <fields> <meta>; XACK <stream> <group> <id>; EXEC`.
pub(crate) fn bury(entry: &Entry, b: &Burial<'_>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let add = pipe.cmd("XADD").arg(dead_letter_key(b.stream)).arg("*");
    for (k, v) in entry.fields.as_deref().unwrap_or_default() {
        add.arg(k.as_slice()).arg(v.as_slice());
    }
    add.arg(ORIGINAL_ID)
        .arg(&entry.id)
        .arg(GROUP)
        .arg(b.group)
        .arg(CONSUMER)
        .arg(b.consumer)
        .arg(DELIVERIES)
        .arg(b.deliveries)
        .arg(REASON)
        .arg(b.reason);
    pipe.cmd("XACK").arg(b.stream).arg(b.group).arg(&entry.id);
    pipe
}

/// The fields of a dead letter without the appended meta fields (the last
/// five, when they carry the meta names).
fn original_fields(mut fields: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    for name in META.iter().rev() {
        if fields.last().is_some_and(|(k, _)| k == name.as_bytes()) {
            fields.pop();
        } else {
            break;
        }
    }
    fields
}

fn parse(e: Entry) -> DeadLetter {
    let all = e.fields.unwrap_or_default();
    let meta_start = original_fields(all.clone()).len();
    let (original, meta) = all.split_at(meta_start);
    let meta_field = |name: &str| {
        meta.iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    DeadLetter {
        id: e.id,
        original_id: meta_field(ORIGINAL_ID),
        group: meta_field(GROUP),
        consumer: meta_field(CONSUMER),
        reason: meta_field(REASON),
        deliveries: meta_field(DELIVERIES).parse().unwrap_or(0),
        fields: original
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_fields_are_split_from_the_original_ones() {
        let mut fields = vec![
            (b"data".to_vec(), b"{}".to_vec()),
            (REASON.as_bytes().to_vec(), b"user's own field".to_vec()),
        ];
        for (name, value) in META.iter().zip(["1-0", "g", "c", "3", "boom"]) {
            fields.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        }
        let d = parse(Entry {
            id: "9-0".into(),
            fields: Some(fields),
        });
        assert_eq!(
            (
                d.original_id.as_str(),
                d.group.as_str(),
                d.deliveries,
                d.reason.as_str()
            ),
            ("1-0", "g", 3, "boom")
        );
        assert_eq!(d.fields.len(), 2, "the user's own `dead_reason` stays");
        assert_eq!(d.data(), Some(&b"{}"[..]));
    }
}
