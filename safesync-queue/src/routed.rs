//! [`Routed`]: a handler run on a stream and group chosen at runtime.

use std::sync::Arc;
use std::time::Duration;

use safesync_core::RetryPolicy;

use crate::Stream;
use crate::handler::sealed::{Erased, Sealed};
use crate::handler::{Body, ErasedHandler, IntoHandler};

/// A handler run on a stream and in a group chosen at runtime, instead of
/// the ones it names (`#[queue_handler(stream = "orders", group = "billing")]`
/// stays the default): e.g. an environment prefix read from configuration.
///
/// [`Worker::handle`](crate::Worker::handle) accepts it wherever it accepts
/// the handler, a [`Handler`](crate::Handler) or a
/// [`PlainHandler`](crate::PlainHandler) alike; everything else (payload,
/// retries, timeout, ledger) is the handler's. `#[queue_handler]` gives
/// `bill.on(stream, group)`; `Routed::new(handler, stream, group)` wraps a
/// handler written by hand. [`Routed::stream`] is the typed producer for
/// the runtime name: it accepts only the handler's payload type.
///
/// The names are checked when the worker runs
/// ([`Worker::run`](crate::Worker::run) fails with
/// [`Error::Config`](safesync_core::Error::Config) naming the handler):
/// empty or too long, a stream name shaped like one of a stream's own keys
/// (`{orders}:dead:billing`, `{orders}:replay:billing`, …), or two handlers
/// on the same stream and group.
///
/// A wrapper rather than names inside the handler: the attribute's
/// handler is a unit struct named after the fn, usable as a constant and
/// by several workers at once; the runtime names belong to the worker
/// that runs it, so they live beside it.
///
/// ```no_run
/// # use safesync_core::{Error, Tx};
/// # use safesync_queue::{Handler, __private::BoxFuture};
/// # #[allow(non_camel_case_types)] struct bill;
/// # impl Handler for bill {
/// #     type Payload = i64;
/// #     fn stream(&self) -> &'static str { "orders" }
/// #     fn group(&self) -> &'static str { "billing" }
/// #     fn handle<'t>(&'t self, _: &'t mut Tx<'_>, _: i64) -> BoxFuture<'t, Result<(), Error>> { Box::pin(async { Ok(()) }) }
/// # }
/// # async fn demo(db: safesync_core::Db, redis: safesync_queue::Redis) -> Result<(), Error> {
/// use safesync_queue::{Routed, Worker};
///
/// let env = std::env::var("APP_ENV").unwrap_or_else(|_| "dev".to_owned());
/// let billing = Routed::new(bill, format!("{env}.orders"), "billing");
/// billing.stream().send(&redis, &7).await?; // only `bill`'s payload type
/// Worker::new(db, redis).handle(billing).run_until_signal().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Routed<H> {
    handler: H,
    stream: String,
    group: String,
}

impl<H> Routed<H> {
    /// `handler`, run on `stream` in `group` instead of the names it
    /// gives.
    ///
    /// ```
    /// # use safesync_core::Error;
    /// # use safesync_queue::{PlainHandler, __private::BoxFuture};
    /// # struct Notify;
    /// # impl PlainHandler for Notify {
    /// #     type Payload = i64;
    /// #     fn stream(&self) -> &'static str { "orders" }
    /// #     fn group(&self) -> &'static str { "mailer" }
    /// #     fn handle(&self, _: i64) -> BoxFuture<'_, Result<(), Error>> { Box::pin(async { Ok(()) }) }
    /// # }
    /// let routed = safesync_queue::Routed::new(Notify, "staging.orders", "mailer");
    /// assert_eq!(routed.stream_name(), "staging.orders");
    /// assert_eq!(routed.group_name(), "mailer");
    /// ```
    pub fn new(handler: H, stream: impl Into<String>, group: impl Into<String>) -> Self {
        Routed {
            handler,
            stream: stream.into(),
            group: group.into(),
        }
    }

    /// The stream it consumes.
    ///
    /// ```
    /// # struct H;
    /// let routed = safesync_queue::Routed::new(H, "staging.orders", "billing");
    /// assert_eq!(routed.stream_name(), "staging.orders");
    /// ```
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// The group it reads in.
    ///
    /// ```
    /// # struct H;
    /// let routed = safesync_queue::Routed::new(H, "staging.orders", "billing");
    /// assert_eq!(routed.group_name(), "billing");
    /// ```
    pub fn group_name(&self) -> &str {
        &self.group
    }

    /// The handler it runs.
    ///
    /// ```
    /// # #[derive(Debug, PartialEq)] struct H;
    /// let routed = safesync_queue::Routed::new(H, "staging.orders", "billing");
    /// assert_eq!(routed.handler(), &H);
    /// ```
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The typed producer for the runtime stream: `send` accepts only the
    /// handler's payload type, checked at compile time.
    ///
    /// ```
    /// # use safesync_core::Error;
    /// # use safesync_queue::{PlainHandler, __private::BoxFuture};
    /// # struct Notify;
    /// # impl PlainHandler for Notify {
    /// #     type Payload = i64;
    /// #     fn stream(&self) -> &'static str { "orders" }
    /// #     fn group(&self) -> &'static str { "mailer" }
    /// #     fn handle(&self, _: i64) -> BoxFuture<'_, Result<(), Error>> { Box::pin(async { Ok(()) }) }
    /// # }
    /// let routed = safesync_queue::Routed::new(Notify, "staging.orders", "mailer");
    /// let producer: safesync_queue::Stream<i64> = routed.stream();
    /// assert_eq!(producer.name(), "staging.orders");
    /// ```
    pub fn stream<K>(&self) -> Stream<H::Payload>
    where
        H: IntoHandler<K>,
    {
        Stream::named(self.stream.clone())
    }
}

impl<K, H: IntoHandler<K>> Sealed<K> for Routed<H> {
    fn into_erased(self) -> Erased {
        let inner = Sealed::into_erased(self.handler).0;
        Erased(Arc::new(Renamed {
            inner,
            stream: self.stream,
            group: self.group,
        }))
    }
}

impl<K, H: IntoHandler<K>> IntoHandler<K> for Routed<H> {
    type Payload = H::Payload;
}

/// An erased handler under other names.
struct Renamed {
    inner: Arc<dyn ErasedHandler>,
    stream: String,
    group: String,
}

impl ErasedHandler for Renamed {
    fn stream(&self) -> &str {
        &self.stream
    }

    fn group(&self) -> &str {
        &self.group
    }

    fn payload_type(&self) -> &'static str {
        self.inner.payload_type()
    }

    fn body(&self) -> Body<'_> {
        self.inner.body()
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        self.inner.retry_policy()
    }

    fn timeout(&self) -> Option<Duration> {
        self.inner.timeout()
    }
}
