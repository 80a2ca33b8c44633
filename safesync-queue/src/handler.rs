//! The handler traits — [`Handler`] (in a transaction) and [`PlainHandler`]
//! (without one) — [`IntoHandler`], which [`Worker::handle`](crate::Worker::handle)
//! takes, and the type-erased form the worker stores.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use futures_core::future::BoxFuture;
use safesync_core::{Error, Result, RetryPolicy, Tx};

/// A typed message handler that runs in a database transaction: what
/// `#[queue_handler]` generates for an
/// `async fn(tx: &mut Tx<'_>, msg: Payload) -> Result<(), Error>`, and what
/// you can write by hand.
///
/// The [`Worker`](crate::Worker) decodes each entry's `data` field (JSON)
/// into [`Payload`](Handler::Payload), begins a transaction, records the
/// entry in the ledger, runs [`handle`](Handler::handle), commits, and only
/// then acknowledges the entry. A retryable error (a version conflict, a
/// deadlock, …) is retried at once in a new transaction, under
/// [`retry_policy`](Handler::retry_policy) or the worker's
/// [`retry`](crate::Worker::retry); any other `Err`, a panic, a timeout or
/// retries given up roll the transaction back and leave the entry pending,
/// so it is delivered again. Delivery is
/// at least once; the ledger row, committed with the handler's writes,
/// makes the *effect* on the database exactly once.
///
/// A handler that does no database work can be a [`PlainHandler`]
/// instead: no transaction and no ledger row per message, but no
/// exactly-once effect either.
///
/// ```
/// use safesync_core::{Error, Tx};
/// use safesync_queue::Handler;
/// use safesync_queue::__private::BoxFuture;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderPlaced {
///     order_id: i64,
/// }
///
/// /// What the attribute generates: a unit struct named after the fn, whose
/// /// `handle` calls the original fn, nested inside it.
/// #[allow(non_camel_case_types)]
/// struct bill;
///
/// impl Handler for bill {
///     type Payload = OrderPlaced;
///     fn stream(&self) -> &'static str {
///         "orders"
///     }
///     fn group(&self) -> &'static str {
///         "billing"
///     }
///     fn handle<'t>(&'t self, tx: &'t mut Tx<'_>, msg: OrderPlaced) -> BoxFuture<'t, Result<(), Error>> {
///         async fn bill(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
///             tx.execute_with("UPDATE orders SET status = 'billed' WHERE id = ?", (msg.order_id,))
///                 .await?;
///             Ok(())
///         }
///         Box::pin(bill(tx, msg))
///     }
/// }
/// # let _ = bill;
/// ```
pub trait Handler: Send + Sync + 'static {
    /// The payload type, JSON in the entry's `data` field.
    type Payload: serde::de::DeserializeOwned + serde::Serialize + Send + 'static;

    /// The stream key the handler consumes, unless it runs under other
    /// names: [`Routed`](crate::Routed).
    fn stream(&self) -> &'static str;

    /// The consumer group the handler reads in (created from the start of
    /// the stream when missing), unless it runs under other names:
    /// [`Routed`](crate::Routed).
    fn group(&self) -> &'static str;

    /// Handles one message inside the worker's transaction `tx`.
    ///
    /// `Err` or a panic rolls the transaction back and leaves the entry
    /// pending for another delivery.
    fn handle<'t>(
        &'t self,
        tx: &'t mut Tx<'_>,
        msg: Self::Payload,
    ) -> BoxFuture<'t, Result<(), Error>>;

    /// How this handler's retryable errors are retried within one
    /// delivery; `None` (the default) takes the worker's
    /// [`retry`](crate::Worker::retry). `#[queue_handler(retry = expr)]`
    /// sets it; `retry = false` is `Some(RetryPolicy::never())`. Read
    /// when the worker starts.
    ///
    /// ```
    /// # use safesync_core::{Error, RetryPolicy, Tx};
    /// # use safesync_queue::{Handler, __private::BoxFuture};
    /// # struct Bill;
    /// impl Handler for Bill {
    ///     // …
    /// #   type Payload = i64;
    /// #   fn stream(&self) -> &'static str { "orders" }
    /// #   fn group(&self) -> &'static str { "billing" }
    /// #   fn handle<'t>(&'t self, _: &'t mut Tx<'_>, _: i64) -> BoxFuture<'t, Result<(), Error>> { Box::pin(async { Ok(()) }) }
    ///     fn retry_policy(&self) -> Option<RetryPolicy> {
    ///         Some(RetryPolicy::default().max_attempts(20))
    ///     }
    /// }
    /// # assert_eq!(Bill.retry_policy().unwrap().attempts(), 20);
    /// ```
    fn retry_policy(&self) -> Option<RetryPolicy> {
        None
    }

    /// How long one delivery of this handler may take, all its attempts
    /// together; `None` (the default) takes the worker's
    /// [`handler_timeout`](crate::Worker::handler_timeout).
    /// `#[queue_handler(timeout = "10s")]` sets it. Must be below
    /// [`claim_idle`](crate::Worker::claim_idle), or
    /// [`run`](crate::Worker::run) fails with [`Error::Config`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use safesync_core::{Error, Tx};
    /// # use safesync_queue::{Handler, __private::BoxFuture};
    /// # struct Bill;
    /// impl Handler for Bill {
    ///     // …
    /// #   type Payload = i64;
    /// #   fn stream(&self) -> &'static str { "orders" }
    /// #   fn group(&self) -> &'static str { "billing" }
    /// #   fn handle<'t>(&'t self, _: &'t mut Tx<'_>, _: i64) -> BoxFuture<'t, Result<(), Error>> { Box::pin(async { Ok(()) }) }
    ///     fn timeout(&self) -> Option<Duration> {
    ///         Some(Duration::from_secs(10))
    ///     }
    /// }
    /// # assert_eq!(Bill.timeout(), Some(Duration::from_secs(10)));
    /// ```
    fn timeout(&self) -> Option<Duration> {
        None
    }
}

/// A typed message handler that runs **without** a database transaction:
/// what `#[queue_handler]` generates for an
/// `async fn(msg: Payload) -> Result<(), Error>` (no `tx` argument), and
/// what you can write by hand.
///
/// For handlers that do no database work: call an HTTP API, forward to
/// another stream, update a cache. The [`Worker`](crate::Worker) decodes
/// the entry, runs [`handle`](PlainHandler::handle) and acknowledges the
/// entry when it returns `Ok` — no `BEGIN`, no ledger row, no `COMMIT`.
///
/// **At-least-once delivery, not exactly-once effect.** Failures behave as
/// for a [`Handler`]: an `Err` or a panic leaves the entry pending, it is
/// claimed and delivered again after [`claim_idle`](crate::Worker::claim_idle),
/// and moves to the dead letters after
/// [`max_deliveries`](crate::Worker::max_deliveries); an undecodable payload
/// moves there at once. But there is no ledger: a handler that succeeded
/// and whose acknowledgement was then lost (a crash, a Redis failover) runs
/// again on the redelivery. A plain handler must therefore be idempotent
/// itself (an idempotency key on the API it calls, a cache `SET` rather
/// than an `INCR`, …). A handler that writes to the database should be a
/// [`Handler`] and take the `tx`, so that its writes and the ledger row
/// commit together.
///
/// ```
/// use safesync_core::Error;
/// use safesync_queue::PlainHandler;
/// use safesync_queue::__private::BoxFuture;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderPlaced {
///     order_id: i64,
/// }
///
/// /// What `#[queue_handler(stream = "orders", group = "mailer")]` on
/// /// `async fn notify(msg: OrderPlaced) -> Result<(), Error>` generates.
/// #[allow(non_camel_case_types)]
/// struct notify;
///
/// impl PlainHandler for notify {
///     type Payload = OrderPlaced;
///     fn stream(&self) -> &'static str {
///         "orders"
///     }
///     fn group(&self) -> &'static str {
///         "mailer"
///     }
///     fn handle(&self, msg: OrderPlaced) -> BoxFuture<'_, Result<(), Error>> {
///         Box::pin(async move {
///             // e.g. POST /notify with an idempotency key of `msg.order_id`
///             let _ = msg.order_id;
///             Ok(())
///         })
///     }
/// }
/// # let _ = notify;
/// ```
pub trait PlainHandler: Send + Sync + 'static {
    /// The payload type, JSON in the entry's `data` field.
    type Payload: serde::de::DeserializeOwned + serde::Serialize + Send + 'static;

    /// The stream key the handler consumes, unless it runs under other
    /// names: [`Routed`](crate::Routed).
    fn stream(&self) -> &'static str;

    /// The consumer group the handler reads in (created from the start of
    /// the stream when missing), unless it runs under other names:
    /// [`Routed`](crate::Routed).
    fn group(&self) -> &'static str;

    /// Handles one message, with no transaction around it.
    ///
    /// `Ok` acknowledges the entry; `Err` or a panic leaves it pending for
    /// another delivery. Must be idempotent: see the trait's documentation.
    fn handle(&self, msg: Self::Payload) -> BoxFuture<'_, Result<(), Error>>;

    /// How long one run of this handler may take; `None` (the default)
    /// takes the worker's [`handler_timeout`](crate::Worker::handler_timeout).
    /// `#[queue_handler(timeout = "10s")]` sets it. Must be below
    /// [`claim_idle`](crate::Worker::claim_idle), or
    /// [`run`](crate::Worker::run) fails with [`Error::Config`]. (A plain
    /// handler has no retries in place: it has no transaction to run again.)
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use safesync_core::Error;
    /// # use safesync_queue::{PlainHandler, __private::BoxFuture};
    /// # struct Notify;
    /// impl PlainHandler for Notify {
    ///     // …
    /// #   type Payload = i64;
    /// #   fn stream(&self) -> &'static str { "orders" }
    /// #   fn group(&self) -> &'static str { "mailer" }
    /// #   fn handle(&self, _: i64) -> BoxFuture<'_, Result<(), Error>> { Box::pin(async { Ok(()) }) }
    ///     fn timeout(&self) -> Option<Duration> {
    ///         Some(Duration::from_secs(5))
    ///     }
    /// }
    /// # assert_eq!(Notify.timeout(), Some(Duration::from_secs(5)));
    /// ```
    fn timeout(&self) -> Option<Duration> {
        None
    }
}

/// The kinds of handler, the type parameter of [`IntoHandler`].
///
/// They only tell the two blanket implementations apart, so that
/// [`Worker::handle`](crate::Worker::handle) takes both kinds; you never
/// name them.
pub mod kind {
    /// A [`Handler`](crate::Handler): run in a transaction, with a ledger
    /// row.
    ///
    /// ```
    /// fn takes<H: safesync_queue::IntoHandler<safesync_queue::kind::Transactional>>(_: H) {}
    /// ```
    #[derive(Debug)]
    pub enum Transactional {}

    /// A [`PlainHandler`](crate::PlainHandler): run without a transaction.
    ///
    /// ```
    /// fn takes<H: safesync_queue::IntoHandler<safesync_queue::kind::Plain>>(_: H) {}
    /// ```
    #[derive(Debug)]
    pub enum Plain {}
}

pub(crate) mod sealed {
    /// Turns a handler into what the worker stores. Public in a private
    /// module: [`IntoHandler`](super::IntoHandler) cannot be implemented
    /// outside this crate.
    pub trait Sealed<Kind> {
        fn into_erased(self) -> Erased;
    }

    /// A handler as the worker stores it; opaque outside this crate.
    pub struct Erased(pub(crate) std::sync::Arc<dyn super::ErasedHandler>);
}

/// What [`Worker::handle`](crate::Worker::handle) accepts: every
/// [`Handler`] (with `Kind` = [`kind::Transactional`]) and every
/// [`PlainHandler`] (with `Kind` = [`kind::Plain`]), through two blanket
/// implementations. The compiler infers `Kind`; implement one of the two
/// handler traits, never this one (it is sealed). A type implementing both
/// is ambiguous and rejected.
///
/// ```
/// use safesync_queue::IntoHandler;
///
/// /// Accepts what `Worker::handle` accepts.
/// fn register<K, H: IntoHandler<K>>(handler: H) -> H {
///     handler
/// }
/// # let _ = register::<safesync_queue::kind::Plain, Never>;
/// # struct Never;
/// # impl safesync_queue::PlainHandler for Never {
/// #     type Payload = i64;
/// #     fn stream(&self) -> &'static str { "s" }
/// #     fn group(&self) -> &'static str { "g" }
/// #     fn handle(&self, _: i64) -> safesync_queue::__private::BoxFuture<'_, Result<(), safesync_core::Error>> { Box::pin(async { Ok(()) }) }
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a queue handler",
    label = "`Worker::handle` takes a `Handler` or a `PlainHandler`",
    note = "annotate an `async fn(tx: &mut Tx<'_>, msg: Payload)` or an `async fn(msg: Payload)` with `#[queue_handler(stream = \"…\")]`, or implement `Handler` or `PlainHandler`"
)]
pub trait IntoHandler<Kind>: sealed::Sealed<Kind> + Send + Sync + 'static {
    /// The handler's payload type: what its typed producers
    /// ([`Routed::stream`](crate::Routed::stream)) accept.
    type Payload: serde::de::DeserializeOwned + serde::Serialize + Send + 'static;
}

impl<H: Handler> sealed::Sealed<kind::Transactional> for H {
    fn into_erased(self) -> sealed::Erased {
        sealed::Erased(Arc::new(Erased(self)))
    }
}

impl<H: Handler> IntoHandler<kind::Transactional> for H {
    type Payload = H::Payload;
}

impl<H: PlainHandler> sealed::Sealed<kind::Plain> for H {
    fn into_erased(self) -> sealed::Erased {
        sealed::Erased(Arc::new(ErasedPlain(self)))
    }
}

impl<H: PlainHandler> IntoHandler<kind::Plain> for H {
    type Payload = H::Payload;
}

/// A handler as the worker stores it.
pub(crate) fn erase<K, H: IntoHandler<K>>(h: H) -> Arc<dyn ErasedHandler> {
    sealed::Sealed::into_erased(h).0
}

/// A decoded payload, typed by the handler that decoded it.
pub(crate) type Decoded = Box<dyn Any + Send>;

/// A handler without its payload type, so one worker holds several.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn stream(&self) -> &str;
    fn group(&self) -> &str;
    /// The payload's type name, for messages.
    fn payload_type(&self) -> &'static str;
    /// How its entries are handled.
    fn body(&self) -> Body<'_>;
    /// Its own retry policy, if any ([`Handler::retry_policy`]).
    fn retry_policy(&self) -> Option<RetryPolicy>;
    /// Its own timeout, if any.
    fn timeout(&self) -> Option<Duration>;
}

/// How a handler's entries are handled: in a transaction or not. A plain
/// handler has no method that takes a transaction.
pub(crate) enum Body<'a> {
    Tx(&'a dyn TxBody),
    Plain(&'a dyn PlainBody),
}

/// The erased [`Handler::handle`].
pub(crate) trait TxBody: Send + Sync {
    /// Decodes the JSON of a `data` field; the error text says why not.
    fn decode(&self, json: &str) -> Result<Decoded, String>;
    /// Runs the handler on what [`TxBody::decode`] returned.
    fn handle<'t>(&'t self, tx: &'t mut Tx<'_>, msg: Decoded) -> BoxFuture<'t, Result<()>>;
}

/// The erased [`PlainHandler::handle`].
pub(crate) trait PlainBody: Send + Sync {
    /// Decodes the JSON of a `data` field and starts the handler on it
    /// (no box, no downcast); the error text says why it cannot be
    /// decoded.
    fn start(&self, json: &str) -> Result<BoxFuture<'_, Result<()>>, String>;
}

/// The erased form of a [`Handler`].
pub(crate) struct Erased<H>(pub(crate) H);

impl<H: Handler> ErasedHandler for Erased<H> {
    fn stream(&self) -> &str {
        self.0.stream()
    }

    fn group(&self) -> &str {
        self.0.group()
    }

    fn payload_type(&self) -> &'static str {
        std::any::type_name::<H::Payload>()
    }

    fn body(&self) -> Body<'_> {
        Body::Tx(self)
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        self.0.retry_policy()
    }

    fn timeout(&self) -> Option<Duration> {
        self.0.timeout()
    }
}

impl<H: Handler> TxBody for Erased<H> {
    fn decode(&self, json: &str) -> Result<Decoded, String> {
        match serde_json::from_str::<H::Payload>(json) {
            Ok(msg) => Ok(Box::new(msg)),
            Err(e) => Err(e.to_string()),
        }
    }

    fn handle<'t>(&'t self, tx: &'t mut Tx<'_>, msg: Decoded) -> BoxFuture<'t, Result<()>> {
        match msg.downcast::<H::Payload>() {
            Ok(msg) => self.0.handle(tx, *msg),
            Err(_) => Box::pin(std::future::ready(Err(Error::Decode {
                what: format!("a payload for the handler of `{}`", self.0.stream()),
                reason: format!(
                    "it was not decoded as `{}` (a safesync bug)",
                    std::any::type_name::<H::Payload>()
                ),
            }))),
        }
    }
}

/// The erased form of a [`PlainHandler`].
pub(crate) struct ErasedPlain<H>(pub(crate) H);

impl<H: PlainHandler> ErasedHandler for ErasedPlain<H> {
    fn stream(&self) -> &str {
        self.0.stream()
    }

    fn group(&self) -> &str {
        self.0.group()
    }

    fn payload_type(&self) -> &'static str {
        std::any::type_name::<H::Payload>()
    }

    fn body(&self) -> Body<'_> {
        Body::Plain(self)
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        None
    }

    fn timeout(&self) -> Option<Duration> {
        self.0.timeout()
    }
}

impl<H: PlainHandler> PlainBody for ErasedPlain<H> {
    fn start(&self, json: &str) -> Result<BoxFuture<'_, Result<()>>, String> {
        match serde_json::from_str::<H::Payload>(json) {
            Ok(msg) => Ok(self.0.handle(msg)),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a non-string panic payload)".to_owned())
}
