//! One placeholder spelling on every backend: `?`.
//!
//! The statement is scanned once. Outside string literals, quoted
//! identifiers, comments and (PostgreSQL) dollar-quoted strings, every `?`
//! is a placeholder: counted on every backend, and rewritten to `$1`, `$2`,
//! … on PostgreSQL. A `?` inside a literal, an identifier or a comment is
//! left alone. Numbered placeholders (`?1`, and `$1` on PostgreSQL) are
//! refused, so one statement never mixes two spellings.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::backend::Lexical;

/// A statement ready for the backend, and how many values it takes.
#[derive(Debug)]
pub(crate) struct Prepared<'s> {
    /// The text to send: `?` on SQLite and MySQL, `$n` on PostgreSQL.
    pub(crate) sql: Cow<'s, str>,
    /// How many `?` placeholders the statement has.
    pub(crate) placeholders: usize,
}

/// Scans `sql` for `?` placeholders under a backend's lexical rules; numbers
/// them where the backend wants `$n`. The error says what is wrong with the
/// text.
pub(crate) fn prepare(sql: &str, lexical: Lexical) -> Result<Prepared<'_>, String> {
    let b = sql.as_bytes();
    let pg = lexical.numbered;
    let mysql = lexical.mysql_comments_and_escapes;
    let mut out = String::new();
    let mut copied = 0; // bytes of `sql` already in `out`
    let mut count = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        i = match c {
            b'\'' => {
                // Backslash escapes: MySQL's strings, PostgreSQL's E'…'.
                let e_string = pg && i > 0 && matches!(b[i - 1], b'e' | b'E') && !ident(b, i - 1);
                skip_quoted(b, i, b'\'', mysql || e_string)
                    .ok_or("an unterminated string literal")?
            }
            b'"' => skip_quoted(b, i, b'"', mysql).ok_or("an unterminated quoted identifier")?,
            b'`' if !pg => {
                skip_quoted(b, i, b'`', false).ok_or("an unterminated quoted identifier")?
            }
            b'[' if lexical.bracket_identifiers => {
                find(b, i + 1, b"]").ok_or("an unterminated `[identifier]`")?
            }
            b'-' if next == Some(b'-')
                && (!mysql || b.get(i + 2).is_none_or(u8::is_ascii_whitespace)) =>
            {
                find(b, i + 2, b"\n").unwrap_or(b.len())
            }
            b'#' if mysql => find(b, i + 1, b"\n").unwrap_or(b.len()),
            b'/' if next == Some(b'*') => {
                skip_block_comment(b, i, pg).ok_or("an unterminated `/*` comment")?
            }
            b'$' if pg && !ident(b, i) => match next {
                Some(d) if d.is_ascii_digit() => {
                    return Err("a `$1`-style placeholder: write `?` on every backend".into());
                }
                _ => match dollar_tag(b, i) {
                    Some(tag) => {
                        find(b, i + tag.len(), tag).ok_or("an unterminated dollar-quoted string")?
                    }
                    None => i + 1,
                },
            },
            b'?' => {
                if next.is_some_and(|d| d.is_ascii_digit()) {
                    return Err("a numbered `?1` placeholder: write plain `?`".into());
                }
                count += 1;
                if pg {
                    out.push_str(&sql[copied..i]);
                    let _ = write!(out, "${count}");
                    copied = i + 1;
                }
                i + 1
            }
            _ => i + 1,
        };
    }
    let sql = if copied == 0 {
        Cow::Borrowed(sql)
    } else {
        out.push_str(&sql[copied..]);
        Cow::Owned(out)
    };
    Ok(Prepared {
        sql,
        placeholders: count,
    })
}

/// Whether the byte before `i` continues an identifier (so `a$1` or
/// `xe'…'` are not what they look like alone).
fn ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] >= 0x80)
}

/// Past the end of `needle`, searching from `from`; `None` if absent.
fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p + needle.len())
}

/// Past the closing `q` of the quoted text opening at `start`; a doubled
/// `q` is part of the text, and so is any byte after `\` when `backslash`.
fn skip_quoted(b: &[u8], start: usize, q: u8, backslash: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if backslash => i += 2,
            c if c == q => {
                if b.get(i + 1) == Some(&q) {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Past the `*/` closing the comment opening at `start` (PostgreSQL's
/// comments nest).
fn skip_block_comment(b: &[u8], start: usize, nested: bool) -> Option<usize> {
    let mut depth = 1;
    let mut i = start + 2;
    while i + 1 < b.len() {
        if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else if nested && b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    None
}

/// The `$tag$` (or `$$`) opening a dollar-quoted string at `start`.
fn dollar_tag(b: &[u8], start: usize) -> Option<&[u8]> {
    let mut i = start + 1;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
        if i == start + 1 && b[i].is_ascii_digit() {
            return None;
        }
        i += 1;
    }
    (b.get(i) == Some(&b'$')).then(|| &b[start..=i])
}

#[cfg(all(test, feature = "sqlite", feature = "mysql", feature = "postgres"))]
mod tests {
    use super::prepare;
    use crate::backend::{Backend, Lexical};

    const POSTGRES: Lexical = <sqlx::Postgres as Backend>::LEXICAL;
    const MYSQL: Lexical = <sqlx::MySql as Backend>::LEXICAL;
    const SQLITE: Lexical = <sqlx::Sqlite as Backend>::LEXICAL;

    fn pg(sql: &str) -> (String, usize) {
        let p = prepare(sql, POSTGRES).unwrap();
        (p.sql.into_owned(), p.placeholders)
    }

    #[test]
    fn postgres_numbers_placeholders_in_order() {
        assert_eq!(
            pg("UPDATE t SET a = ?, b = ? WHERE id = ?"),
            ("UPDATE t SET a = $1, b = $2 WHERE id = $3".into(), 3)
        );
        assert_eq!(pg("SELECT 1"), ("SELECT 1".into(), 0));
        assert_eq!(pg("SELECT ?::bigint"), ("SELECT $1::bigint".into(), 1));
    }

    #[test]
    fn question_marks_in_literals_identifiers_and_comments_stay() {
        let sql = "SELECT '?', 'it''s ?', \"a?b\", E'\\'?' -- ?\n, /* ? /* ? */ ? */ ?";
        let (out, n) = pg(sql);
        assert_eq!(n, 1, "{out}");
        assert!(out.ends_with("*/ $1"), "{out}");
        assert!(out.starts_with("SELECT '?', 'it''s ?', \"a?b\", E'\\'?' -- ?\n"));
    }

    #[test]
    fn dollar_quoted_strings_are_skipped_on_postgres() {
        let (out, n) = pg("SELECT $$ ? $$, $tag$ ? $$ ? $tag$, ?");
        assert_eq!(n, 1);
        assert!(out.ends_with(", $1"), "{out}");
    }

    #[test]
    fn mysql_and_sqlite_keep_question_marks_and_count_them() {
        for d in [MYSQL, SQLITE] {
            let p = prepare("SELECT `a?`, '?', ? FROM t WHERE x = ? -- ?", d).unwrap();
            assert_eq!(p.placeholders, 2, "{d:?}");
            assert!(matches!(p.sql, std::borrow::Cow::Borrowed(_)));
        }
        // MySQL strings take backslash escapes; `#` starts a comment.
        let p = prepare("SELECT 'a\\'?', ? # ?", MYSQL).unwrap();
        assert_eq!(p.placeholders, 1);
        // On MySQL `--` needs a space to be a comment: `1--?` is 1 - (-?).
        assert_eq!(prepare("SELECT 1--?", MYSQL).unwrap().placeholders, 1);
        assert_eq!(prepare("SELECT 1--?", SQLITE).unwrap().placeholders, 0);
        // SQLite's [bracketed identifiers].
        assert_eq!(prepare("SELECT [a?] , ?", SQLITE).unwrap().placeholders, 1);
    }

    #[test]
    fn other_spellings_and_unterminated_text_are_errors() {
        let err = prepare("SELECT $1", POSTGRES).unwrap_err();
        assert!(err.contains("`$1`-style"), "{err}");
        let err = prepare("SELECT ?1", SQLITE).unwrap_err();
        assert!(err.contains("numbered"), "{err}");
        assert!(
            prepare("SELECT 'open ?", MYSQL)
                .unwrap_err()
                .contains("string")
        );
        assert!(
            prepare("SELECT /* ?", POSTGRES)
                .unwrap_err()
                .contains("comment")
        );
        // `a$1` is an identifier on PostgreSQL, not a placeholder.
        assert_eq!(
            prepare("SELECT a$1 FROM t", POSTGRES).unwrap().placeholders,
            0
        );
    }
}
