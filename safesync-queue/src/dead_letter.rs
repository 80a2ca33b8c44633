//! Dead letters: entries one consumer group could not decode or kept
//! failing on, moved to that group's `{<stream>}:dead:<group>` with the
//! reason, and how to replay them to that group alone.

use redis::Value;

use crate::handle::{Conn, Redis};
use safesync_core::{Error, Result};

use crate::conn::{self, COMMAND_TIMEOUT};
use crate::entry::{self, Entry};
use crate::keys::{self, dead_letter_key, legacy_dead_letter_key, replay_key};

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
/// Field of a replayed entry (on the replay stream only): the id of the
/// entry in the stream, which the ledger records, so that a replay of an
/// entry whose effect did commit is recognised.
pub(crate) const REPLAY_OF: &str = "safesync_replay_of";

/// The fields appended to a dead letter, in order.
const META: [&str; 5] = [ORIGINAL_ID, GROUP, CONSUMER, DELIVERIES, REASON];

/// An entry of a dead-letter stream, from [`dead_letters`].
///
/// Its `Debug` output shows each field's value as text when it is UTF-8
/// (a JSON payload reads as JSON), and as an escaped byte string
/// (`b"\xff…"`) when it is not.
#[derive(Clone, PartialEq, Eq)]
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
    /// Why: what could not be decoded, or the handler's last error (at
    /// most 1 KiB, cut with a marker).
    pub reason: String,
    /// How many times it had been delivered.
    pub deliveries: u64,
    /// The original entry's fields, in order (names decoded lossily).
    pub fields: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// A field value: text when it is UTF-8, else an escaped byte string.
        struct Value<'a>(&'a [u8]);
        impl std::fmt::Debug for Value<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match std::str::from_utf8(self.0) {
                    Ok(text) => std::fmt::Debug::fmt(text, f),
                    Err(_) => write!(f, "b\"{}\"", self.0.escape_ascii()),
                }
            }
        }
        struct Fields<'a>(&'a [(String, Vec<u8>)]);
        impl std::fmt::Debug for Fields<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_list()
                    .entries(self.0.iter().map(|(name, value)| (name, Value(value))))
                    .finish()
            }
        }
        f.debug_struct("DeadLetter")
            .field("id", &self.id)
            .field("original_id", &self.original_id)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("reason", &self.reason)
            .field("deliveries", &self.deliveries)
            .field("fields", &Fields(&self.fields))
            .finish()
    }
}

impl DeadLetter {
    /// The original `data` field (the JSON payload), if it had one.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), safesync_core::Error> {
    /// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// for dead in safesync_queue::dead_letters(&redis, "orders", "billing").await? {
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

/// Every entry of `key`, oldest first, read in pages.
pub(crate) async fn all_entries(c: &mut Conn, key: &str) -> Result<Vec<Entry>> {
    const PAGE: usize = 500;
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: Value = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(c)
            .await
            .map_err(|e| conn::redis_err(format!("XRANGE on `{key}`"), e))?;
        let entries = entry::entries(page).map_err(|reason| Error::Decode {
            what: format!("the reply to XRANGE on `{key}`"),
            reason,
        })?;
        let full = entries.len() == PAGE;
        let Some(last) = entries.last() else { break };
        start = format!("({}", last.id);
        out.extend(entries);
        if !full {
            break;
        }
    }
    Ok(out)
}

/// The dead letters of `group` on `stream`, oldest first: those of its own
/// key ([`dead_letter_key`]) after the group's ones still in the key that
/// every group shared before (`<stream>:dead`, no longer written to).
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// let dead = safesync_queue::dead_letters(&redis, "orders", "billing").await?;
/// println!("{} dead letters", dead.len());
/// # Ok(()) }
/// ```
pub async fn dead_letters(redis: &Redis, stream: &str, group: &str) -> Result<Vec<DeadLetter>> {
    let mut c = conn::connect(redis, COMMAND_TIMEOUT).await?;
    let legacy = all_entries(&mut c, &legacy_dead_letter_key(stream)).await?;
    let own = all_entries(&mut c, &dead_letter_key(stream, group)).await?;
    Ok(legacy
        .into_iter()
        .map(parse)
        .filter(|d| d.group == group)
        .chain(own.into_iter().map(parse))
        .collect())
}

/// The dead letter `id` of `group`: where it is, and the entry.
async fn find(
    c: &mut Conn,
    stream: &str,
    group: &str,
    id: &str,
) -> Result<Option<(String, Entry)>> {
    for key in [
        dead_letter_key(stream, group),
        legacy_dead_letter_key(stream),
    ] {
        let found: Value = redis::cmd("XRANGE")
            .arg(&key)
            .arg(id)
            .arg(id)
            .query_async(c)
            .await
            .map_err(|e| conn::redis_err(format!("XRANGE on `{key}`"), e))?;
        let found = entry::entries(found).map_err(|reason| Error::Decode {
            what: format!("the reply to XRANGE on `{key}`"),
            reason,
        })?;
        if let Some(e) = found.into_iter().next()
            && parse(e.clone()).group == group
        {
            return Ok(Some((key, e)));
        }
    }
    Ok(None)
}

/// Hands dead letter `id` of `group` back to that group alone: its
/// original fields go on the group's replay stream ([`replay_key`]), which
/// only the group's workers read, and it leaves the dead letters, in one
/// transaction. Returns the id on the replay stream.
///
/// The entry never goes back on `stream`, so other groups (safesync's or
/// not) never see it again. A worker of `group` handles it like a new
/// entry; a transactional handler's ledger records it under its original
/// id, so a replay of an entry whose effect had committed is only
/// acknowledged. Dead letters still in the older shared key
/// `<stream>:dead` are found too (those `group` gave up on).
///
/// An `id` not among `group`'s dead letters is [`Error::NotFound`].
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// for dead in safesync_queue::dead_letters(&redis, "orders", "billing").await? {
///     safesync_queue::replay_dead_letter(&redis, "orders", "billing", &dead.id).await?;
/// }
/// # Ok(()) }
/// ```
pub async fn replay_dead_letter(
    redis: &Redis,
    stream: &str,
    group: &str,
    id: &str,
) -> Result<String> {
    let not_found = || Error::NotFound {
        table: None,
        key: Some(format!(
            "dead letter {id} of group `{group}` in `{}`",
            dead_letter_key(stream, group)
        )),
    };
    if !entry::is_entry_id(id) {
        return Err(not_found());
    }
    let mut c = conn::connect(redis, COMMAND_TIMEOUT).await?;
    let Some((key, dead)) = find(&mut c, stream, group, id).await? else {
        return Err(not_found());
    };
    let original_id = parse(dead.clone()).original_id;
    let original = original_fields(dead.fields.unwrap_or_default());
    if original.is_empty() {
        // A stream entry needs a field; an empty dead letter cannot be one.
        return Err(Error::Decode {
            what: format!("dead letter {id} in `{key}`"),
            reason: "it has no original fields to replay".to_owned(),
        });
    }
    let to = replay_key(stream, group);
    let mut add = redis::cmd("XADD");
    add.arg(&to).arg("*");
    for (k, v) in &original {
        add.arg(k.as_slice()).arg(v.as_slice());
    }
    if entry::is_entry_id(&original_id) {
        add.arg(REPLAY_OF).arg(&original_id);
    }
    let mut del = redis::cmd("XDEL");
    del.arg(&key).arg(id);
    let failed = |e| conn::redis_err(format!("replay of {id} from `{key}` to `{to}`"), e);
    // In one transaction, unless a cluster holds the two keys in different
    // slots (a dead letter of the older shared key `<stream>:dead`, which a
    // cluster never had written to): then the add comes first, so a
    // failure in between leaves a copy, never nothing.
    let new_id: String = if !redis.is_cluster() || keys::slot(&key) == keys::slot(&to) {
        let (new_id, _deleted): (String, i64) = redis::pipe()
            .atomic()
            .add_command(add)
            .add_command(del)
            .query_async(&mut c)
            .await
            .map_err(failed)?;
        new_id
    } else {
        let new_id = add.query_async(&mut c).await.map_err(failed)?;
        let _deleted: i64 = del.query_async(&mut c).await.map_err(failed)?;
        new_id
    };
    Ok(new_id)
}

/// Most bytes of a dead letter's reason (and of the log lines that quote
/// it): a handler's error or serde's may quote the whole payload.
pub(crate) const MAX_REASON: usize = 1024;

/// `reason` cut to at most [`MAX_REASON`] bytes, on a char boundary, with
/// a marker saying how long it was; a short one as it is.
pub(crate) fn cap_reason(reason: &str) -> std::borrow::Cow<'_, str> {
    if reason.len() <= MAX_REASON {
        return reason.into();
    }
    let marker = format!(" … [truncated: {} bytes in all]", reason.len());
    let mut cut = MAX_REASON.saturating_sub(marker.len());
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{marker}", &reason[..cut]).into()
}

/// What the worker knows when it gives up on an entry.
pub(crate) struct Burial<'a> {
    /// The stream its handler consumes.
    pub(crate) stream: &'a str,
    /// The key it was read from: the stream, or the group's replay stream.
    pub(crate) key: &'a str,
    /// True when read from the replay stream: its id in the stream is in
    /// its [`REPLAY_OF`] field.
    pub(crate) replayed: bool,
    pub(crate) group: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) deliveries: u64,
    pub(crate) reason: &'a str,
}

/// `MULTI; XADD {<stream>}:dead:<group> * <fields> <meta>; XACK <key> <group> <id>; EXEC`.
/// A replayed entry goes back with its original fields and id.
pub(crate) fn bury(entry: &Entry, b: &Burial<'_>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let add = pipe
        .cmd("XADD")
        .arg(dead_letter_key(b.stream, b.group))
        .arg("*");
    let mut original_id = entry.id.as_str();
    for (k, v) in entry.fields.as_deref().unwrap_or_default() {
        if b.replayed && k == REPLAY_OF.as_bytes() {
            original_id = std::str::from_utf8(v).unwrap_or(original_id);
            continue;
        }
        add.arg(k.as_slice()).arg(v.as_slice());
    }
    add.arg(ORIGINAL_ID)
        .arg(original_id)
        .arg(GROUP)
        .arg(b.group)
        .arg(CONSUMER)
        .arg(b.consumer)
        .arg(DELIVERIES)
        .arg(b.deliveries)
        .arg(REASON)
        .arg(b.reason);
    pipe.cmd("XACK").arg(b.key).arg(b.group).arg(&entry.id);
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

pub(crate) fn parse(e: Entry) -> DeadLetter {
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
    fn debug_shows_utf8_field_values_as_text_and_others_as_escaped_bytes() {
        let dead = DeadLetter {
            id: "2-0".into(),
            original_id: "1-0".into(),
            group: "billing".into(),
            consumer: "w1".into(),
            reason: "bad".into(),
            deliveries: 3,
            fields: vec![
                ("data".into(), br#"{"order_id":7}"#.to_vec()),
                ("raw".into(), vec![0xff, b'a', b'\n']),
            ],
        };
        let text = format!("{dead:?}");
        assert!(text.contains(r#"("data", "{\"order_id\":7}")"#), "{text}");
        assert!(text.contains(r#"("raw", b"\xffa\n")"#), "{text}");
        assert!(
            text.starts_with(r#"DeadLetter { id: "2-0", original_id: "1-0", group: "billing", consumer: "w1", reason: "bad", deliveries: 3, fields: ["#),
            "{text}"
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary_with_a_marker() {
        assert_eq!(cap_reason("short"), "short");
        let exact = "x".repeat(MAX_REASON);
        assert_eq!(cap_reason(&exact), exact.as_str());
        // Two-byte chars: a cut at an odd byte would split one.
        let long = format!("cannot decode: \"{}\"", "é".repeat(600_000));
        let capped = cap_reason(&long);
        assert!(capped.len() <= MAX_REASON, "{}", capped.len());
        assert!(capped.starts_with("cannot decode: \"éé"), "{capped}");
        assert!(
            capped.ends_with(&format!(" … [truncated: {} bytes in all]", long.len())),
            "{capped}"
        );
        assert_eq!(cap_reason(&capped), capped, "capping twice changes nothing");
    }

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
