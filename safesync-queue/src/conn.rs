//! Connections to Redis: timeouts, keepalive, reconnects, error wrapping.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{AsyncConnectionConfig, Client, FromRedisValue, RedisError};
use safesync_core::__private::redact_url;
use safesync_core::{Error, Result};
use tokio::sync::Mutex;

use crate::handle::{Conn, Redis, addr_of};

/// How long opening a connection may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an ordinary (non-blocking) command may take.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to `BLOCK` for the blocking read's client-side deadline.
pub(crate) const READ_MARGIN: Duration = Duration::from_secs(3);

/// Opens a Redis client from a URL (`redis://[user:password@]host[:port][/db]`),
/// checking only the URL's shape: nothing is connected yet.
///
/// With the feature `tls`, `rediss://…` connects over TLS and verifies the
/// server against the public web PKI roots; for a server whose certificate
/// a private CA signed, use `client_tls` (feature `tls`).
///
/// A URL that does not parse is [`Error::Config`] naming it, password
/// replaced by `***`.
///
/// ```
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// # let _ = redis;
/// let err = safesync_queue::client("http://user:secret@host").unwrap_err();
/// assert!(err.to_string().contains("http://user:***@host"), "{err}");
/// # Ok::<_, safesync_core::Error>(())
/// ```
pub fn client(url: &str) -> Result<Redis> {
    #[cfg(feature = "tls")]
    crate::tls::install_crypto_provider();
    Client::open(url).map(Redis::from).map_err(|e| {
        let redacted = redact_url(url);
        Error::Config(format!(
            "cannot use Redis URL `{redacted}`: {}; expected \
             `redis://[user:password@]host[:port][/db]` (or `rediss://` with the feature `tls`)",
            e.to_string().replace(url, &redacted)
        ))
    })
}

/// Wraps a client error with what was being done.
pub(crate) fn redis_err(op: impl Into<String>, source: RedisError) -> Error {
    Error::Redis {
        op: op.into(),
        source: Box::new(source),
    }
}

/// The server's error code (`NOGROUP`, `BUSYGROUP`, …), if the error is one.
pub(crate) fn code(err: &RedisError) -> Option<&str> {
    err.code()
}

/// True when the error says the connection is gone or stuck, so a new one
/// is needed.
pub(crate) fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
}

/// The wrapped [`RedisError`] of an [`Error::Redis`].
pub(crate) fn as_redis_error(err: &Error) -> Option<&RedisError> {
    match err {
        Error::Redis { source, .. } => source.downcast_ref::<RedisError>(),
        _ => None,
    }
}

/// TCP keepalive on: a dead peer or a half-open connection is noticed.
pub(crate) fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new().with_time(Duration::from_secs(30));
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
    let keepalive = keepalive
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
}

/// `name` as a valid `CLIENT SETNAME` argument (no spaces or newlines).
pub(crate) fn client_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect()
}

/// [`connect_node`], then names the connection (`CLIENT SETNAME`, best
/// effort) so that `CLIENT LIST` tells whose it is.
pub(crate) async fn connect_named(
    client: &Client,
    response_timeout: Duration,
    name: &str,
) -> Result<MultiplexedConnection> {
    let mut conn = connect_node(client, response_timeout).await?;
    let _ = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(client_name(name))
        .query_async::<redis::Value>(&mut conn)
        .await;
    Ok(conn)
}

/// A connection to `redis`: to a single node, a new one whose commands
/// fail after `response_timeout`; to a cluster, its shared one.
pub(crate) async fn connect(redis: &Redis, response_timeout: Duration) -> Result<Conn> {
    redis.connection(response_timeout).await
}

/// [`connect`], named (`CLIENT SETNAME`) on a single node; a cluster's
/// shared connection is not named.
async fn connect_redis_named(
    redis: &Redis,
    response_timeout: Duration,
    name: &str,
) -> Result<Conn> {
    match redis.node_client() {
        Some(c) => Ok(Conn::Node(connect_named(c, response_timeout, name).await?)),
        None => connect(redis, response_timeout).await,
    }
}

/// Opens a new multiplexed connection to one node whose commands fail
/// after `response_timeout`, with TCP keepalive on.
pub(crate) async fn connect_node(
    client: &Client,
    response_timeout: Duration,
) -> Result<MultiplexedConnection> {
    #[cfg(feature = "tls")]
    crate::tls::install_crypto_provider();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(response_timeout)
        .set_tcp_settings(tcp_settings());
    // The client's own timeout covers the connect and the handshake
    // (AUTH, SELECT, HELLO); this one is a backstop.
    let limit = CONNECT_TIMEOUT + Duration::from_secs(1);
    match tokio::time::timeout(
        limit,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(connect_error(&addr_of(client), e)),
        Err(_) => Err(Error::Redis {
            op: format!("connect to {}", addr_of(client)),
            source: format!("no answer within {limit:?}").into(),
        }),
    }
}

/// [`Error::TlsNotTrusted`] when the server's certificate was refused,
/// otherwise [`Error::Redis`].
pub(crate) fn connect_error(addr: &str, e: RedisError) -> Error {
    #[cfg(feature = "tls")]
    if let Some(reason) = safesync_core::__private::not_trusted(&e) {
        return Error::TlsNotTrusted {
            target: format!("Redis at {addr}"),
            reason,
            source: Box::new(e),
        };
    }
    redis_err(format!("connect to {addr}"), e)
}

/// A shared connection for ordinary commands (acks, claims, dead letters),
/// opened again after it broke.
pub(crate) struct SideConn {
    redis: Redis,
    name: String,
    conn: Mutex<Option<Conn>>,
}

impl SideConn {
    /// Connects now, so a bad address fails at once.
    pub(crate) async fn connect(redis: &Redis, name: String) -> Result<SideConn> {
        let conn = connect_redis_named(redis, COMMAND_TIMEOUT, &name).await?;
        Ok(SideConn {
            redis: redis.clone(),
            name,
            conn: Mutex::new(Some(conn)),
        })
    }

    /// The connection, opened again when the last one broke.
    pub(crate) async fn get(&self) -> Result<Conn> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = connect_redis_named(&self.redis, COMMAND_TIMEOUT, &self.name).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// True on a Redis Cluster: a pipeline must keep to one hash slot.
    pub(crate) fn is_cluster(&self) -> bool {
        self.redis.is_cluster()
    }

    /// Runs one command; `op` names it in the error.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd, op: &str) -> Result<T> {
        let mut conn = self.get().await?;
        match cmd.query_async(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed(op, e).await),
        }
    }

    /// Runs a pipeline; `op` names it in the error.
    pub(crate) async fn pipe<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        op: &str,
    ) -> Result<T> {
        let mut conn = self.get().await?;
        match pipe.query_async(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed(op, e).await),
        }
    }

    /// Forgets a broken connection, and wraps the error.
    async fn failed(&self, op: &str, e: RedisError) -> Error {
        if is_connection_error(&e) {
            *self.conn.lock().await = None;
        }
        redis_err(op, e)
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://:p@h"), "redis://:***@h");
        // A lone user name is no secret (redis-rs reads it as the ACL user).
        assert_eq!(redact_url("redis://u@h"), "redis://u@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("nonsense"), "nonsense");
    }
}
