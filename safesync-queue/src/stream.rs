//! Typed stream handles: the producer side.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use crate::handle::Redis;
use redis::aio::ConnectionLike;
use safesync_core::{Error, Result, Tx};

use crate::conn::{self, COMMAND_TIMEOUT};

/// The field of a stream entry that carries the JSON payload.
pub const DATA_FIELD: &str = "data";

/// A typed handle on a Redis stream: [`send`](Stream::send) accepts only
/// `T`, so a producer cannot put a payload on the stream that its handler
/// would not decode.
///
/// `#[queue_handler]` gives one per handler: `bill::stream()` on the
/// attribute's stream, `bill::stream_named(name)` on a name chosen at
/// runtime, and [`Routed::stream`](crate::Routed::stream) for a handler
/// run under runtime names. All three are typed by the handler's payload,
/// so a producer built from a handler cannot send another type.
///
/// [`Stream::new`] and [`Stream::named`] stay public and check nothing
/// against any handler: they are for a producer that does not link the
/// handler's crate (another service, a script), which picks `T` itself.
/// The worker checks what arrives: an entry its handler cannot decode
/// goes to the dead letters at once. Prefer the handler's own forms where
/// the handler is in reach.
///
/// ```no_run
/// # async fn demo() -> Result<(), safesync_core::Error> {
/// use safesync_queue::Stream;
///
/// #[derive(serde::Serialize)]
/// struct OrderPlaced {
///     order_id: i64,
/// }
///
/// const ORDERS: Stream<OrderPlaced> = Stream::new("orders");
///
/// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
/// let id = ORDERS.send(&redis, &OrderPlaced { order_id: 7 }).await?;
/// println!("added {id} to {}", ORDERS.name());
/// # Ok(()) }
/// ```
pub struct Stream<T> {
    name: Cow<'static, str>,
    _payload: PhantomData<fn(T)>,
}

impl<T> Clone for Stream<T> {
    fn clone(&self) -> Self {
        Stream {
            name: self.name.clone(),
            _payload: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.name)
            .field("payload", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> Stream<T> {
    /// The stream with key `name`.
    ///
    /// ```
    /// let s: safesync_queue::Stream<u64> = safesync_queue::Stream::new("ticks");
    /// assert_eq!(s.name(), "ticks");
    /// ```
    pub const fn new(name: &'static str) -> Self {
        Stream {
            name: Cow::Borrowed(name),
            _payload: PhantomData,
        }
    }

    /// The stream with key `name`, chosen at runtime (e.g. from
    /// configuration). Like [`Stream::new`], it checks nothing against a
    /// handler: where the handler is in reach, take
    /// `handler::stream_named(name)` or [`Routed::stream`](crate::Routed::stream)
    /// instead, which are typed by its payload.
    ///
    /// ```
    /// let env = "staging";
    /// let s: safesync_queue::Stream<u64> = safesync_queue::Stream::named(format!("{env}.ticks"));
    /// assert_eq!(s.name(), "staging.ticks");
    /// ```
    pub fn named(name: impl Into<Cow<'static, str>>) -> Self {
        Stream {
            name: name.into(),
            _payload: PhantomData,
        }
    }

    /// The stream's key.
    ///
    /// ```
    /// let s: safesync_queue::Stream<u64> = safesync_queue::Stream::new("ticks");
    /// assert_eq!(s.name(), "ticks");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// How [`Stream::send_with`] adds an entry.
///
/// ```
/// use safesync_queue::SendOptions;
///
/// // Keep about the last million entries (`XADD key MAXLEN ~ 1000000 * …`).
/// let opts = SendOptions::default().maxlen(1_000_000);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    maxlen: Option<usize>,
}

impl SendOptions {
    /// Trims the stream to about `n` entries as the entry is added
    /// (`MAXLEN ~ n`, which Redis applies in whole nodes, cheaply).
    ///
    /// Entries trimmed before a consumer read them are gone; ones trimmed
    /// while pending are acknowledged and counted by the worker.
    #[must_use]
    pub fn maxlen(mut self, n: usize) -> Self {
        self.maxlen = Some(n);
        self
    }
}

impl<T: serde::Serialize> Stream<T> {
    /// Adds `msg` as JSON in the entry's `data` field (`XADD key * data …`)
    /// and returns the new entry's id.
    ///
    /// Opens a connection for the call (bounded by a 5 s connect and 10 s
    /// answer timeout); to send many messages, use [`Stream::send_on`] with
    /// a connection you keep.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), safesync_core::Error> {
    /// # #[derive(serde::Serialize)] struct OrderPlaced { order_id: i64 }
    /// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// let orders = safesync_queue::Stream::<OrderPlaced>::new("orders");
    /// let id = orders.send(&redis, &OrderPlaced { order_id: 7 }).await?;
    /// # let _ = id;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, redis: &Redis, msg: &T) -> Result<String> {
        self.send_with(redis, msg, &SendOptions::default()).await
    }

    /// [`Stream::send`] with options (trimming).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), safesync_core::Error> {
    /// # #[derive(serde::Serialize)] struct OrderPlaced { order_id: i64 }
    /// use safesync_queue::{SendOptions, Stream};
    ///
    /// let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
    /// let orders = Stream::<OrderPlaced>::new("orders");
    /// let opts = SendOptions::default().maxlen(100_000);
    /// orders.send_with(&redis, &OrderPlaced { order_id: 7 }, &opts).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_with(&self, redis: &Redis, msg: &T, options: &SendOptions) -> Result<String> {
        let mut conn = conn::connect(redis, COMMAND_TIMEOUT).await?;
        self.send_on(&mut conn, msg, options).await
    }

    /// Writes `msg` to the outbox in `tx`: it is sent (by a
    /// [`Relay`](crate::Relay)) if and only if `tx` commits, as the same
    /// `data` JSON [`Stream::send`] would add, in the order of the
    /// stream's outbox rows.
    ///
    /// The outbox table must exist: [`ensure_outbox`](crate::ensure_outbox)
    /// creates it (a relay does when it starts). [`Relay`](crate::Relay)
    /// says what is guaranteed.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), safesync_core::Error> {
    /// # #[derive(serde::Serialize)] struct OrderPlaced { order_id: i64 }
    /// use safesync_queue::Stream;
    ///
    /// const ORDERS: Stream<OrderPlaced> = Stream::new("orders");
    ///
    /// let db = safesync_core::Db::connect("sqlite:app.db").await?;
    /// safesync_queue::ensure_outbox(&db).await?;
    /// let mut tx = db.begin().await?;
    /// tx.execute_with("INSERT INTO orders (id) VALUES (?)", (7,)).await?;
    /// ORDERS.send_in(&mut tx, &OrderPlaced { order_id: 7 }).await?;
    /// tx.commit().await?; // now, and only now, the relay can send it
    /// # Ok(()) }
    /// ```
    pub async fn send_in(&self, tx: &mut Tx<'_>, msg: &T) -> Result<()> {
        let json = self.encode(msg)?;
        crate::outbox::insert(tx, &self.name, &json).await
    }

    /// `msg` as the JSON of an entry's `data` field.
    fn encode(&self, msg: &T) -> Result<String> {
        if self.name.is_empty() {
            return Err(Error::Config("a stream name must not be empty".to_owned()));
        }
        serde_json::to_string(msg).map_err(|e| Error::Decode {
            what: format!(
                "a `{}` into JSON for stream `{}`",
                std::any::type_name::<T>(),
                self.name
            ),
            reason: e.to_string(),
        })
    }

    /// [`Stream::send_with`] on a connection of yours (a
    /// `MultiplexedConnection`, or a cluster's `ClusterConnection`: cheap
    /// to clone and share).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), safesync_core::Error> {
    /// # #[derive(serde::Serialize)] struct OrderPlaced { order_id: i64 }
    /// use safesync_queue::{SendOptions, Stream};
    ///
    /// let redis = safesync_queue::redis::Client::open("redis://127.0.0.1:6379")
    ///     .map_err(|e| safesync_core::Error::Config(e.to_string()))?;
    /// let mut conn = redis
    ///     .get_multiplexed_async_connection()
    ///     .await
    ///     .map_err(|e| safesync_core::Error::Redis { op: "connect".into(), source: e.into() })?;
    /// let orders = Stream::<OrderPlaced>::new("orders");
    /// for order_id in 0..1000 {
    ///     orders.send_on(&mut conn, &OrderPlaced { order_id }, &SendOptions::default()).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn send_on<C>(&self, conn: &mut C, msg: &T, options: &SendOptions) -> Result<String>
    where
        C: ConnectionLike + Send,
    {
        let json = self.encode(msg)?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.name.as_ref());
        if let Some(n) = options.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*").arg(DATA_FIELD).arg(json);
        cmd.query_async(conn)
            .await
            .map_err(|e| conn::redis_err(format!("XADD to `{}`", self.name), e))
    }
}
