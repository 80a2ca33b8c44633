//! Keeping passwords out of messages.

/// The URL with any password replaced by `***`: database URLs here, Redis
/// URLs in the queue.
///
/// ```
/// use safesync_core::__private::redact_url;
/// assert_eq!(redact_url("mysql://user:secret@host/db"), "mysql://user:***@host/db");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end + 3],
        &userinfo[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn password_is_hidden() {
        assert_eq!(
            redact_url("mysql://u:p%40ss@h:3306/db?x=1"),
            "mysql://u:***@h:3306/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact_url("redis://:pw@h"), "redis://:***@h");
    }
}
