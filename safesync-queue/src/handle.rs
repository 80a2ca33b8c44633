//! [`Redis`]: one handle for a single Redis node or a Redis Cluster, and
//! [`Conn`], the connection every queue command runs on.

use std::sync::Arc;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisFuture, Value};
use safesync_core::__private::redact_url;
use safesync_core::{Error, Result};
use tokio::sync::Mutex;

use crate::conn;

/// Where the queue's Redis is: a single node ([`client`](crate::client)) or
/// a Redis Cluster ([`cluster`](crate::cluster)). Every queue call takes
/// one; cloning it is cheap and clones share a cluster's connection.
///
/// On a cluster every key of a stream is in the stream's hash slot (see
/// [`dead_letter_key`](crate::dead_letter_key)), so the queue's
/// transactions and scripts run on the node that owns that slot; a
/// worker's blocking reads go to that node on a connection of their own,
/// found again after a `MOVED` or a failover.
///
/// ```
/// let node = safesync_queue::client("redis://127.0.0.1:6379")?;
/// assert!(!node.is_cluster());
/// let cluster = safesync_queue::cluster(&["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])?;
/// assert!(cluster.is_cluster());
/// // A redis-rs client converts too.
/// let from_client: safesync_queue::Redis = redis::Client::open("redis://127.0.0.1:6379").unwrap().into();
/// # let _ = from_client;
/// # Ok::<_, safesync_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Redis {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Node(Client),
    Cluster(Arc<Cluster>),
}

/// A cluster: its client, the seed nodes (their credentials and TLS
/// settings are used for the connection of a blocking read to one node),
/// and the shared connection.
struct Cluster {
    client: ClusterClient,
    seed: Client,
    seeds: Vec<String>,
    conn: Mutex<Option<ClusterConnection>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Node(c) => f.debug_tuple("Redis::Node").field(&addr_of(c)).finish(),
            Kind::Cluster(c) => f.debug_tuple("Redis::Cluster").field(&c.seeds).finish(),
        }
    }
}

impl From<Client> for Redis {
    fn from(client: Client) -> Redis {
        Redis {
            kind: Kind::Node(client),
        }
    }
}

/// A Redis Cluster reached through `seeds`, URLs of some of its nodes
/// (`redis://[user:password@]host:port`; one reachable node is enough, the
/// others are found with `CLUSTER SLOTS`). Nothing is connected yet.
///
/// With the feature `tls`, `rediss://…` seeds connect over TLS with the
/// public web PKI roots; for a private CA use `cluster_tls` (feature `tls`).
///
/// No seed, a URL that does not parse, seeds with different passwords or
/// TLS modes, or a `unix://` seed are [`Error::Config`] (passwords replaced
/// by `***`).
///
/// ```
/// let redis = safesync_queue::cluster(&["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])?;
/// # let _ = redis;
/// let err = safesync_queue::cluster(&[] as &[&str]).unwrap_err();
/// assert!(err.to_string().contains("no seed node"), "{err}");
/// let err = safesync_queue::cluster(&["redis://:secret@h:1", "http://x"]).unwrap_err();
/// assert!(!err.to_string().contains("secret"), "{err}");
/// # Ok::<_, safesync_core::Error>(())
/// ```
pub fn cluster<S: AsRef<str>>(seeds: &[S]) -> Result<Redis> {
    let nodes = seeds
        .iter()
        .map(|s| crate::client(s.as_ref()).map(|r| r.node_client().cloned()))
        .collect::<Result<Vec<_>>>()?;
    let nodes: Vec<Client> = nodes.into_iter().flatten().collect();
    cluster_of(seeds, &nodes, |b| b)
}

/// The cluster of `nodes` (clients for the `seeds`), its builder finished
/// by `configure` (a CA of its own, with the feature `tls`).
pub(crate) fn cluster_of<S: AsRef<str>>(
    seeds: &[S],
    nodes: &[Client],
    configure: impl FnOnce(ClusterClientBuilder) -> ClusterClientBuilder,
) -> Result<Redis> {
    let shown: Vec<String> = seeds.iter().map(|s| redact_url(s.as_ref())).collect();
    let Some(seed) = nodes.first().cloned() else {
        return Err(Error::Config(
            "a Redis Cluster needs at least one seed node URL; got no seed node".to_owned(),
        ));
    };
    let infos: Vec<ConnectionInfo> = nodes
        .iter()
        .map(|c| c.get_connection_info().clone())
        .collect();
    let builder = ClusterClient::builder(infos)
        .connection_timeout(conn::CONNECT_TIMEOUT)
        .response_timeout(conn::COMMAND_TIMEOUT)
        .tcp_settings(conn::tcp_settings());
    let client = configure(builder).build().map_err(|e| {
        let mut shown_err = e.to_string();
        for s in seeds {
            shown_err = shown_err.replace(s.as_ref(), &redact_url(s.as_ref()));
        }
        Error::Config(format!(
            "cannot use the Redis Cluster seeds {shown:?}: {shown_err}"
        ))
    })?;
    Ok(Redis {
        kind: Kind::Cluster(Arc::new(Cluster {
            client,
            seed,
            seeds: shown,
            conn: Mutex::new(None),
        })),
    })
}

impl Redis {
    /// True for a Redis Cluster, false for a single node.
    ///
    /// ```
    /// assert!(!safesync_queue::client("redis://127.0.0.1:6379")?.is_cluster());
    /// # Ok::<_, safesync_core::Error>(())
    /// ```
    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }

    /// The single node's redis-rs client, for the program's own commands
    /// (with the same URL, credentials and TLS settings); `None` for a
    /// cluster.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// if let Some(client) = redis.node_client() {
    ///     let mut conn = client.get_multiplexed_async_connection().await?;
    ///     let n: u64 = redis::cmd("XLEN").arg("orders").query_async(&mut conn).await?;
    ///     println!("{n} entries");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn node_client(&self) -> Option<&Client> {
        match &self.kind {
            Kind::Node(c) => Some(c),
            Kind::Cluster(_) => None,
        }
    }

    /// The cluster's redis-rs client, for the program's own commands;
    /// `None` for a single node.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = safesync_queue::cluster(&["redis://127.0.0.1:7000"])?;
    /// if let Some(client) = redis.cluster_client() {
    ///     let mut conn = client.get_async_connection().await?;
    ///     let n: u64 = redis::cmd("XLEN").arg("orders").query_async(&mut conn).await?;
    ///     println!("{n} entries");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn cluster_client(&self) -> Option<&ClusterClient> {
        match &self.kind {
            Kind::Node(_) => None,
            Kind::Cluster(c) => Some(&c.client),
        }
    }

    /// `host:port` of the node, or the seeds of the cluster, for messages.
    pub(crate) fn addr(&self) -> String {
        match &self.kind {
            Kind::Node(c) => addr_of(c),
            Kind::Cluster(c) => format!("the Redis Cluster of {}", c.seeds.join(", ")),
        }
    }

    /// A connection: a new one to a single node, or the cluster's shared
    /// one (opened on first use; it follows `MOVED` and failovers itself).
    pub(crate) async fn connection(&self, response_timeout: std::time::Duration) -> Result<Conn> {
        match &self.kind {
            Kind::Node(c) => Ok(Conn::Node(conn::connect_node(c, response_timeout).await?)),
            Kind::Cluster(c) => {
                let mut slot = c.conn.lock().await;
                if let Some(conn) = slot.as_ref() {
                    return Ok(Conn::Cluster(conn.clone()));
                }
                let limit = conn::CONNECT_TIMEOUT * 2;
                let conn = match tokio::time::timeout(limit, c.client.get_async_connection()).await
                {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return Err(conn::connect_error(&self.addr(), e)),
                    Err(_) => {
                        return Err(Error::Redis {
                            op: format!("connect to {}", self.addr()),
                            source: format!("no answer within {limit:?}").into(),
                        });
                    }
                };
                *slot = Some(conn.clone());
                Ok(Conn::Cluster(conn))
            }
        }
    }

    /// The client of the node that serves `key`: the single node, or the
    /// master that owns `key`'s hash slot now (asked with `CLUSTER SLOTS`),
    /// with the seeds' credentials and TLS settings. A blocking read runs
    /// there on a connection of its own.
    pub(crate) async fn node_for(&self, key: &str) -> Result<Client> {
        let cluster = match &self.kind {
            Kind::Node(c) => return Ok(c.clone()),
            Kind::Cluster(c) => c,
        };
        let mut conn = self.connection(conn::COMMAND_TIMEOUT).await?;
        let slots: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .map_err(|e| conn::redis_err(format!("CLUSTER SLOTS on {}", self.addr()), e))?;
        let slot = crate::keys::slot(key);
        let (host, port) = owner(&slots, slot).ok_or_else(|| Error::Redis {
            op: format!("find the node of `{key}` (slot {slot}) on {}", self.addr()),
            source: "no node serves the slot (CLUSTER SLOTS)".into(),
        })?;
        let mut info = cluster.seed.get_connection_info().clone();
        match &mut info.addr {
            ConnectionAddr::Tcp(h, p)
            | ConnectionAddr::TcpTls {
                host: h, port: p, ..
            } => {
                *h = host;
                *p = port;
            }
            ConnectionAddr::Unix(_) => {
                return Err(Error::Config(
                    "a Redis Cluster cannot be reached over a unix socket".to_owned(),
                ));
            }
        }
        Client::open(info).map_err(|e| conn::redis_err(format!("open a client for `{key}`"), e))
    }
}

/// `host:port` of a client.
pub(crate) fn addr_of(client: &Client) -> String {
    client.get_connection_info().addr.to_string()
}

/// The master's `(host, port)` serving `slot` in a `CLUSTER SLOTS` reply
/// (`[[start, end, [host, port, id, …], replicas…], …]`).
fn owner(reply: &Value, slot: u16) -> Option<(String, u16)> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let Value::Array(parts) = range else {
            return None;
        };
        let int = |v: &Value| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        let (start, end) = (int(parts.first()?)?, int(parts.get(1)?)?);
        if !(start..=end).contains(&i64::from(slot)) {
            return None;
        }
        let Value::Array(master) = parts.get(2)? else {
            return None;
        };
        let host = match master.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let port = u16::try_from(int(master.get(1)?)?).ok()?;
        Some((host, port))
    })
}

/// A connection to a single node or to a cluster; commands on a cluster
/// go to the node that owns their keys' slot.
#[derive(Clone)]
pub(crate) enum Conn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_owner_of_a_slot_is_read_from_cluster_slots() {
        let node =
            |host: &str, port: i64| Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]);
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("10.0.0.2", 7001),
            ]),
        ]);
        assert_eq!(owner(&reply, 0), Some(("10.0.0.1".to_owned(), 7000)));
        assert_eq!(owner(&reply, 5460), Some(("10.0.0.1".to_owned(), 7000)));
        assert_eq!(owner(&reply, 5461), Some(("10.0.0.2".to_owned(), 7001)));
        assert_eq!(owner(&Value::Array(vec![]), 1), None);
        assert_eq!(owner(&Value::Nil, 1), None);
    }
}
