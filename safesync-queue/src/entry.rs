//! Stream entries as Redis sends them, parsed from raw replies so that no
//! entry (binary fields, deleted bodies) can make a whole batch fail.

use redis::Value;

/// One stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The entry id, `<ms>-<seq>`.
    pub(crate) id: String,
    /// Field-value pairs in order; `None` when the entry was deleted or
    /// trimmed away while it was pending.
    pub(crate) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Entry {
    /// The value of the first field named `name`.
    pub(crate) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .as_deref()?
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The field names, for messages: `` `a`, `b` `` or `no fields`.
    pub(crate) fn field_names(&self) -> String {
        let names: Vec<String> = self
            .fields
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|(k, _)| format!("`{}`", String::from_utf8_lossy(k)))
            .collect();
        if names.is_empty() {
            "no fields".to_owned()
        } else {
            names.join(", ")
        }
    }
}

/// A value's bytes, for the scalar kinds Redis uses for strings.
pub(crate) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

/// A value's bytes, moved out rather than copied.
fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        other => bytes(&other),
    }
}

/// A value as text (lossy), for ids and names.
pub(crate) fn text(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A value as an integer, also when sent as a string.
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// The elements of an array (or set); a map flattened to key, value, ….
pub(crate) fn items(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        Value::Map(pairs) => Some(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Attribute { data, .. } => items(*data),
        _ => None,
    }
}

/// Key-value pairs of a map or of a flat `[k1, v1, k2, v2, …]` array.
pub(crate) fn pairs(v: Value) -> Option<Vec<(String, Value)>> {
    let items = items(v)?;
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let Some(k) = it.next() {
        let v = it.next()?;
        out.push((text(&k)?, v));
    }
    Some(out)
}

/// The value of `key` among `pairs`.
pub(crate) fn get<'a>(pairs: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// An entry: `[id, [field, value, …]]`, or `[id, nil]` for a deleted one.
fn entry(v: Value) -> Result<Entry, String> {
    let mut parts = items(v).ok_or("an entry is not an array")?.into_iter();
    let id = parts
        .next()
        .and_then(into_bytes)
        .map(|b| {
            String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
        .ok_or("an entry has no id")?;
    let fields = match parts.next() {
        None | Some(Value::Nil) => None,
        Some(list) => {
            let flat =
                items(list).ok_or_else(|| format!("the fields of entry {id} are not an array"))?;
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let Some(k) = it.next() {
                let v = it
                    .next()
                    .ok_or_else(|| format!("entry {id} has a field without a value"))?;
                match (into_bytes(k), into_bytes(v)) {
                    (Some(k), Some(v)) => fields.push((k, v)),
                    _ => return Err(format!("entry {id} has a field that is not a string")),
                }
            }
            Some(fields)
        }
    };
    Ok(Entry { id, fields })
}

/// A list of entries.
pub(crate) fn entries(v: Value) -> Result<Vec<Entry>, String> {
    match v {
        Value::Nil => Ok(Vec::new()),
        v => items(v)
            .ok_or("the entries are not an array")?
            .into_iter()
            .map(entry)
            .collect(),
    }
}

/// The reply to `XREADGROUP … STREAMS key id` (one stream): its entries;
/// none when the read timed out.
pub(crate) fn read_reply(v: Value) -> Result<Vec<Entry>, String> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Map(streams) => match streams.into_iter().next() {
            Some((_, list)) => entries(list),
            None => Ok(Vec::new()),
        },
        v => {
            let streams = items(v).ok_or("the reply is not an array of streams")?;
            match streams.into_iter().next() {
                Some(stream) => {
                    let mut parts = items(stream)
                        .ok_or("a stream is not `[key, entries]`")?
                        .into_iter();
                    let _key = parts.next();
                    entries(parts.next().unwrap_or(Value::Nil))
                }
                None => Ok(Vec::new()),
            }
        }
    }
}

/// The reply to `XAUTOCLAIM`.
#[derive(Debug)]
pub(crate) struct AutoClaim {
    /// The cursor for the next call; `0-0` after a full scan.
    pub(crate) next: String,
    /// Entries now owned by the claiming consumer.
    pub(crate) claimed: Vec<Entry>,
    /// Pending ids whose entries no longer exist (Redis 7+; removed from
    /// the pending list by the claim itself).
    pub(crate) deleted: Vec<String>,
}

/// Parses `[next, entries, deleted?]`.
pub(crate) fn autoclaim_reply(v: Value) -> Result<AutoClaim, String> {
    let mut parts = items(v).ok_or("the reply is not an array")?.into_iter();
    let next = parts
        .next()
        .as_ref()
        .and_then(text)
        .ok_or("the reply has no cursor")?;
    let claimed = entries(parts.next().unwrap_or(Value::Nil))?;
    let deleted = match parts.next() {
        None | Some(Value::Nil) => Vec::new(),
        Some(list) => items(list)
            .ok_or("the deleted ids are not an array")?
            .iter()
            .filter_map(text)
            .collect(),
    };
    Ok(AutoClaim {
        next,
        claimed,
        deleted,
    })
}

/// True for a well-formed entry id (`<ms>-<seq>`).
pub(crate) fn is_entry_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.len() <= 20
            && seq.len() <= 20
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}

/// An entry id's two numbers, `<ms>-<seq>`; `None` for other text.
fn id_numbers(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The later of two entry ids (by their numbers, not as text); an id that
/// does not parse never wins.
pub(crate) fn later_id(known: Option<String>, id: &str) -> Option<String> {
    let Some(new) = id_numbers(id) else {
        return known;
    };
    match known.as_deref().and_then(id_numbers) {
        Some(old) if old >= new => known,
        _ => Some(id.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_later_id_is_compared_by_numbers() {
        assert_eq!(later_id(None, "5-0").as_deref(), Some("5-0"));
        assert_eq!(
            later_id(Some("10-0".into()), "9-5").as_deref(),
            Some("10-0")
        );
        assert_eq!(
            later_id(Some("9-5".into()), "10-0").as_deref(),
            Some("10-0")
        );
        assert_eq!(
            later_id(Some("7-2".into()), "7-10").as_deref(),
            Some("7-10")
        );
        assert_eq!(later_id(Some("7-2".into()), "junk").as_deref(), Some("7-2"));
    }

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn a_read_reply_keeps_binary_and_deleted_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(b"1-0"),
                    Value::Array(vec![bulk(b"data"), bulk(b"\xff")]),
                ]),
                Value::Array(vec![bulk(b"2-0"), Value::Nil]),
            ]),
        ])]);
        let got = read_reply(reply).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].field("data"), Some(&b"\xff"[..]));
        assert_eq!(got[1].fields, None);
        assert_eq!(read_reply(Value::Nil).unwrap(), Vec::new());
    }

    #[test]
    fn an_autoclaim_reply_has_cursor_and_deleted_ids() {
        let reply = Value::Array(vec![
            bulk(b"0-0"),
            Value::Array(vec![Value::Array(vec![bulk(b"1-0"), Value::Array(vec![])])]),
            Value::Array(vec![bulk(b"3-0")]),
        ]);
        let got = autoclaim_reply(reply).unwrap();
        assert_eq!(got.next, "0-0");
        assert_eq!(got.claimed[0].id, "1-0");
        assert_eq!(got.deleted, vec!["3-0".to_owned()]);
    }

    #[test]
    fn entry_ids_are_checked() {
        assert!(is_entry_id("1700000000000-0"));
        assert!(!is_entry_id("1700000000000"));
        assert!(!is_entry_id("a-1"));
        assert!(!is_entry_id("1-"));
    }
}
