//! Typed message handlers on Redis Streams for
//! [safesync](https://docs.rs/safesync): at-least-once delivery with an
//! exactly-once effect on your database.
//!
//! - [`Stream<T>`]: a typed stream handle; [`Stream::send`] takes only `T`,
//!   as JSON in the entry's `data` field.
//! - [`Handler`]: what `#[queue_handler]` implements for an
//!   `async fn(tx: &mut Tx<'_>, msg: T) -> Result<(), Error>`: run in a
//!   transaction with a ledger row, for an exactly-once effect.
//! - [`PlainHandler`]: what it implements for an
//!   `async fn(msg: T) -> Result<(), Error>`: run without a transaction or
//!   ledger row, for handlers that do no database work (at-least-once
//!   delivery; the handler must be idempotent itself).
//! - [`Worker`]: the consume → transaction → commit → ack loop, with
//!   claims of stuck entries, dead letters, a ledger for exactly-once
//!   effects, reconnects and a clean stop.
//! - [`Stream::send_in`] and [`Relay`]: a transactional outbox; a message
//!   is sent if and only if the transaction that wrote it commits, and a
//!   relay's resend after a crash adds no second entry. The relay runs on
//!   its own or inside a worker ([`Worker::relay_outbox`]), and wakes on
//!   PostgreSQL's `NOTIFY` ([`OUTBOX_CHANNEL`]) or by polling elsewhere.
//! - [`dead_letters`], [`replay_dead_letter`], [`health`], [`QueueMetrics`],
//!   [`groups`], [`pending_entries`], [`dead_letter`], [`purge_dead_letters`]:
//!   operations (what the `safesync` CLI runs).
//!
//! Users depend on the `safesync` facade with its `queue` feature, not on
//! this crate.
//!
//! ```no_run
//! use safesync_core::{Db, Error, Tx};
//! use safesync_queue::{Handler, Stream, Worker, __private::BoxFuture};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct OrderPlaced {
//!     order_id: i64,
//! }
//!
//! // What `#[queue_handler(stream = "orders", group = "billing")]` on
//! // `async fn bill(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error>`
//! // generates.
//! #[allow(non_camel_case_types)]
//! struct bill;
//! impl Handler for bill {
//!     type Payload = OrderPlaced;
//!     fn stream(&self) -> &'static str { "orders" }
//!     fn group(&self) -> &'static str { "billing" }
//!     fn handle<'t>(&'t self, tx: &'t mut Tx<'_>, msg: OrderPlaced) -> BoxFuture<'t, Result<(), Error>> {
//!         async fn bill(tx: &mut Tx<'_>, msg: OrderPlaced) -> Result<(), Error> {
//!             tx.execute_with("UPDATE orders SET status = 'billed' WHERE id = ?", (msg.order_id,))
//!                 .await?;
//!             Ok(())
//!         }
//!         Box::pin(bill(tx, msg))
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Error> {
//! let db = Db::connect("sqlite:app.db").await?;
//! let redis = safesync_queue::client("redis://127.0.0.1:6379")?;
//!
//! const ORDERS: Stream<OrderPlaced> = Stream::new("orders");
//! ORDERS.send(&redis, &OrderPlaced { order_id: 7 }).await?;
//!
//! Worker::new(db, redis).handle(bill).concurrency(16).run_until_signal().await?;
//! # Ok(()) }
//! ```

mod admin;
mod conn;
mod dead_letter;
mod entry;
mod handle;
mod handler;
mod health;
mod keys;
mod ledger;
mod metrics;
mod outbox;
mod relay;
mod routed;
mod stream;
#[cfg(feature = "tls")]
mod tls;
mod wake;
mod worker;

pub use admin::{PendingEntry, dead_letter, groups, pending_entries, purge_dead_letters};
pub use conn::client;
pub use dead_letter::{DeadLetter, dead_letters, replay_dead_letter};
pub use handle::{Redis, cluster};
pub use handler::{Handler, IntoHandler, PlainHandler, kind};
pub use health::{ConsumerHealth, Health, health, remove_idle_consumers};
pub use keys::{dead_letter_key, replay_key};
pub use ledger::{LEDGER_TABLE, ensure_ledger, prune_ledger};
pub use metrics::QueueMetrics;
pub use outbox::{OUTBOX_CHANNEL, OUTBOX_TABLE, ensure_outbox};
pub use relay::{Relay, RelaySummary};
pub use routed::Routed;
pub use stream::{DATA_FIELD, SendOptions, Stream};
#[cfg(feature = "tls")]
pub use tls::{client_tls, cluster_tls};
pub use worker::{FailedDelivery, Summary, Worker};

/// The redis crate the queue is built on: a [`redis::Client`] converts
/// into a [`Redis`].
pub use redis;
/// Stops a [`Worker::run`] when cancelled.
pub use tokio_util::sync::CancellationToken;

/// Items `#[queue_handler]`'s generated code names. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use futures_core::future::BoxFuture;
    pub use serde;

    /// Asked by `#[queue_handler]` of its payload type, for a message that
    /// says the fix.
    #[diagnostic::on_unimplemented(
        message = "the payload of a queue handler must be serde-serializable: `{Self}` is not",
        label = "the payload is decoded from JSON in the message's `data` field",
        note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to `{Self}`"
    )]
    pub trait Payload {}
    impl<T: serde::de::DeserializeOwned + serde::Serialize + Send + 'static> Payload for T {}
}
