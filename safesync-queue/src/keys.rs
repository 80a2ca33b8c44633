//! The Redis keys of a stream: every one in the stream's hash slot, so
//! that the transactions over them (dead-lettering, replay) and the worker's
//! read of a group's two streams are valid under Redis Cluster.
//!
//! | key | what |
//! | --- | --- |
//! | `orders` | the stream |
//! | `{orders}:dead:<group>` | the entries `<group>` gave up on ([`dead_letters`](crate::dead_letters)) |
//! | `{orders}:replay:<group>` | dead letters replayed to `<group>` alone ([`replay_dead_letter`](crate::replay_dead_letter)); read only by that group's workers |
//! | `{orders}:last-error:<group>` | a small hash: `<group>`'s last failed delivery (id, delivery, reason, consumer), read by [`health`](crate::health) |
//! | `orders:dead` | before per-group dead letters: every group's, still listed and replayable (not in the stream's slot: on a cluster its replay adds, then deletes, outside a transaction; safesync never writes it) |
//! | `{orders}:outbox:<row id>.<nonce>` | the entry id a [`Relay`](crate::Relay) added for an outbox row, so a resend of that row adds nothing (expires after the relay's `dedup_ttl`) |
//!
//! On a Redis Cluster each stream's keys live on the master that owns its
//! slot; different streams spread over the masters by their names.
//!
//! A stream with a hash tag keeps it: `{tenant1}:orders` has
//! `{tenant1}:orders:dead:<group>`. (A name with a `}` but no non-empty
//! tag, like `x{}y`, cannot share a slot with its keys under Cluster.)

/// The part of `key` Redis hashes for its slot: what is inside the first
/// `{…}`, when non-empty.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    let tag = &key[open + 1..open + 1 + close];
    (!tag.is_empty()).then_some(tag)
}

/// `<stream>:<what>:<group>` in `stream`'s hash slot: `stream` wrapped in
/// a hash tag unless it has one (a name with a `}` but no tag cannot be
/// wrapped, and is used as it is).
fn related(stream: &str, what: &str, group: &str) -> String {
    if hash_tag(stream).is_some() || stream.contains('}') {
        format!("{stream}:{what}:{group}")
    } else {
        format!("{{{stream}}}:{what}:{group}")
    }
}

/// The key of the dead letters of `group` on `stream`:
/// `{<stream>}:dead:<group>`, in the stream's hash slot (a stream with a
/// hash tag keeps it: `{tenant1}:orders:dead:<group>`).
///
/// ```
/// use safesync_queue::dead_letter_key;
///
/// assert_eq!(dead_letter_key("orders", "billing"), "{orders}:dead:billing");
/// assert_eq!(dead_letter_key("{tenant1}:orders", "billing"), "{tenant1}:orders:dead:billing");
/// ```
pub fn dead_letter_key(stream: &str, group: &str) -> String {
    related(stream, "dead", group)
}

/// The key of the stream that [`replay_dead_letter`](crate::replay_dead_letter)
/// puts `group`'s dead letters on: `{<stream>}:replay:<group>`. Only the
/// workers of `group` read it (beside `stream`), so no other group sees a
/// replayed entry.
///
/// ```
/// use safesync_queue::replay_key;
///
/// assert_eq!(replay_key("orders", "billing"), "{orders}:replay:billing");
/// ```
pub fn replay_key(stream: &str, group: &str) -> String {
    related(stream, "replay", group)
}

/// The key under which a relay keeps the entry id it added for outbox row
/// `row_id` (with its `nonce`) of `stream`: `{<stream>}:outbox:<row id>.<nonce
/// in hex>`, in the stream's hash slot.
pub(crate) fn outbox_dedup_key(stream: &str, row_id: i64, nonce: i64) -> String {
    related(stream, "outbox", &format!("{row_id}.{nonce:016x}"))
}

/// The key of the hash holding the last failed delivery of `group` on
/// `stream`: `{<stream>}:last-error:<group>`, in the stream's hash slot.
pub(crate) fn last_error_key(stream: &str, group: &str) -> String {
    related(stream, "last-error", group)
}

/// The dead-letter key shared by every group before dead letters were kept
/// per group: `<stream>:dead`. Nothing is added to it any more; its
/// entries are still listed and replayed for the group that gave up.
pub(crate) fn legacy_dead_letter_key(stream: &str) -> String {
    format!("{stream}:dead")
}

/// The kinds of key kept beside a stream, as they appear in the key
/// (`<stream>:<what>:<…>` in the stream's hash slot).
const OWN_KEYS: [&str; 4] = ["dead", "replay", "last-error", "outbox"];

/// Which of a stream's own keys `name` is shaped like, if any: a `}`
/// followed later by `:dead:`, `:replay:`, `:last-error:` or `:outbox:`,
/// as in every key [`related`] makes for a stream (`{orders}:dead:billing`,
/// `{tenant1}:orders:replay:billing`). A worker never reads such a key as
/// a stream of its own.
pub(crate) fn own_key_kind(name: &str) -> Option<&'static str> {
    let close = name.find('}')?;
    let rest = &name[close..];
    OWN_KEYS
        .into_iter()
        .find(|what| rest.contains(&format!(":{what}:")))
}

/// The keys kept beside `stream` for `group` that a stream name could
/// collide with, each with what it is: the dead letters (per group and the
/// former shared key), the replay stream and the last-error hash.
pub(crate) fn own_keys(stream: &str, group: &str) -> [(String, &'static str); 4] {
    [
        (dead_letter_key(stream, group), "dead-letter"),
        (legacy_dead_letter_key(stream), "dead-letter"),
        (replay_key(stream, group), "replay"),
        (last_error_key(stream, group), "last-error"),
    ]
}

/// The slot Redis Cluster gives `key` (CRC16/XMODEM of the hashed part,
/// mod 16384).
pub(crate) fn slot(key: &str) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in hashed.as_bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_function_matches_redis() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
    }

    #[test]
    fn every_key_of_a_stream_is_in_its_slot() {
        for stream in ["orders", "{tenant1}:orders", "a{b}c", "o{rders"] {
            for key in [
                dead_letter_key(stream, "billing"),
                replay_key(stream, "g:1"),
                outbox_dedup_key(stream, 7, -1),
                last_error_key(stream, "billing"),
            ] {
                assert_eq!(slot(&key), slot(stream), "{key} of {stream}");
            }
        }
        assert_eq!(
            dead_letter_key("orders", "billing"),
            "{orders}:dead:billing"
        );
        assert_eq!(replay_key("orders", "billing"), "{orders}:replay:billing");
        assert_eq!(
            outbox_dedup_key("orders", 7, 255),
            "{orders}:outbox:7.00000000000000ff"
        );
        assert_eq!(
            dead_letter_key("{tenant1}:orders", "billing"),
            "{tenant1}:orders:dead:billing"
        );
        // An empty tag is no tag, and no tag can hold `x{}y`: such a name
        // cannot share a slot with its keys, and is used as it is.
        assert_eq!(hash_tag("x{}y"), None);
        assert_eq!(dead_letter_key("x{}y", "g"), "x{}y:dead:g");
    }

    #[test]
    fn every_own_key_is_shaped_like_one() {
        for stream in ["orders", "{tenant1}:orders", "x{}y"] {
            for (key, _) in own_keys(stream, "billing") {
                if key.ends_with(":dead") {
                    continue; // the former shared key: matched exactly only
                }
                assert!(own_key_kind(&key).is_some(), "{key}");
            }
            assert!(own_key_kind(&outbox_dedup_key(stream, 7, 1)).is_some());
        }
        for name in [
            "orders",
            "staging.orders",
            "{tenant1}:orders",
            "orders:dead:letters",
        ] {
            assert_eq!(own_key_kind(name), None, "{name}");
        }
    }

    #[test]
    fn groups_do_not_share_keys() {
        assert_ne!(
            dead_letter_key("orders", "a"),
            dead_letter_key("orders", "b")
        );
        assert_ne!(replay_key("orders", "a"), dead_letter_key("orders", "a"));
    }
}
