//! What the commands print: aligned tables for people, JSON for scripts,
//! and nothing that holds a password.

use std::fmt::Write as _;
use std::time::Duration;

/// A plain text table: a header row and rows, columns padded to the
/// widest cell (the last column unpadded).
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in `\n`.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i == last {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A duration for people: `850ms`, `12.3s`, `4m05s`, `3h02m`, `2d04h`;
/// a whole unit without its zero remainder (`7d`, `3h`, `4m`).
pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    let two = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small:02}{small_unit}")
        }
    };
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{}.{}s", s, d.subsec_millis() / 100)
    } else if s < 3600 {
        two(s / 60, "m", s % 60, "s")
    } else if s < 86_400 {
        two(s / 3600, "h", (s % 3600) / 60, "m")
    } else {
        two(s / 86_400, "d", (s % 86_400) / 3600, "h")
    }
}

/// Milliseconds, for JSON.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Bytes as text when they are UTF-8, else as an escaped byte string
/// `b"\xff…"`.
pub(crate) fn payload_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("b\"{}\"", bytes.escape_ascii()),
    }
}

/// At most `max` chars of `text` on one line, with `…` when cut.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// A field value for JSON: `{"text": …}` when UTF-8, `{"hex": …}` else.
pub(crate) fn json_value(bytes: &[u8]) -> serde_json::Value {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return serde_json::json!({ "text": text });
    }
    let hex: String = bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    serde_json::json!({ "hex": hex })
}

/// The passwords of the URLs the command was given, to keep out of
/// everything it prints.
#[derive(Debug, Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    /// Remembers the password of `url`, as written and percent-decoded.
    pub(crate) fn add_url(&mut self, url: &str) {
        let Some((_, rest)) = url.split_once("://") else {
            return;
        };
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let Some((userinfo, _)) = authority.rsplit_once('@') else {
            return;
        };
        let Some((_, password)) = userinfo.split_once(':') else {
            return;
        };
        if password.is_empty() {
            return;
        }
        self.0.push(password.to_owned());
        let decoded = percent_decode(password);
        if decoded != password {
            self.0.push(decoded);
        }
        // Longest first: a password that contains another is replaced whole.
        self.0.sort_by_key(|p| std::cmp::Reverse(p.len()));
    }

    /// `text` with every known password replaced by `***` where it stands
    /// as a word of its own (in `user:password@host`, quoted, between
    /// spaces), not where it is part of a longer name: a password
    /// `safesync` leaves the table `safesync_queue_ledger` readable.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.0 {
            out = replace_words(&out, secret);
        }
        out
    }
}

/// `text` with each occurrence of `word` that is not part of a longer
/// name (no letter, digit or `_` right before or after) replaced by `***`.
fn replace_words(text: &str, word: &str) -> String {
    let is_name = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = if at == 0 {
            out.chars().next_back()
        } else {
            rest[..at].chars().next_back()
        };
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if is_name(before) || is_name(after) {
            out.push_str(word);
        } else {
            out.push_str("***");
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["ID", "CONSUMER", "IDLE"]);
        t.row(vec!["1-0".into(), "w".into(), "5ms".into()]);
        t.row(vec!["12345-0".into(), "worker-1".into(), "1.2s".into()]);
        assert_eq!(
            t.render(),
            "ID       CONSUMER  IDLE\n1-0      w         5ms\n12345-0  worker-1  1.2s\n"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_millis(12_345)), "12.3s");
        assert_eq!(human_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 120)), "3h02m");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 86_400 + 4 * 3600)),
            "2d04h"
        );
        assert_eq!(human_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(human_duration(Duration::from_secs(240)), "4m");
    }

    #[test]
    fn payloads_are_text_when_utf8_and_escaped_or_hex_otherwise() {
        assert_eq!(payload_text(br#"{"a":1}"#), r#"{"a":1}"#);
        assert_eq!(payload_text(&[0xff, b'a', b'\n']), r#"b"\xffa\n""#);
        assert_eq!(json_value(b"hi"), serde_json::json!({"text": "hi"}));
        assert_eq!(
            json_value(&[0xff, 0x01]),
            serde_json::json!({"hex": "ff01"})
        );
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }

    #[test]
    fn passwords_are_redacted_as_written_and_decoded() {
        let mut s = Secrets::default();
        s.add_url("postgres://u:p%40ssw0rd@h/db");
        s.add_url("redis://:hunter22@h:6379");
        s.add_url("redis://h:6379");
        s.add_url("sqlite:/tmp/x.db");
        assert_eq!(
            s.redact("postgres://u:p%40ssw0rd@h/db p@ssw0rd hunter22"),
            "postgres://u:***@h/db *** ***"
        );
        let mut s = Secrets::default();
        s.add_url("mysql://safesync:safesync@h/db");
        assert_eq!(
            s.redact("safesync:safesync@h `safesync_queue_ledger` 'safesync' safesync"),
            "***:***@h `safesync_queue_ledger` '***' ***"
        );
    }
}
