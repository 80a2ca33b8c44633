//! The `Handler` trait, and its type-erased form the worker stores.

use std::any::Any;

use futures_core::future::BoxFuture;
use safesync_core::{Error, Result, Tx};

/// A typed message handler: what `#[queue_handler]` generates for an
/// `async fn(tx: &mut Tx<'_>, msg: Payload) -> Result<(), Error>`, and what
/// you can write by hand.
///
/// The [`Worker`](crate::Worker) decodes each entry's `data` field (JSON)
/// into [`Payload`](Handler::Payload), begins a transaction, records the
/// entry in the ledger, runs [`handle`](Handler::handle), commits, and only
/// then acknowledges the entry. An `Err` or a panic rolls the transaction
/// back and leaves the entry pending, so it is delivered again.
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
///             let sql = format!("UPDATE orders SET status = 'billed' WHERE id = {}", msg.order_id);
///             tx.execute(&sql).await?;
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

    /// The stream key the handler consumes.
    fn stream(&self) -> &'static str;

    /// The consumer group the handler reads in (created from the start of
    /// the stream when missing).
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
}

/// A decoded payload, typed by the handler that decoded it.
pub(crate) type Decoded = Box<dyn Any + Send>;

/// [`Handler`] without its payload type, so one worker holds several.
pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn stream(&self) -> &'static str;
    fn group(&self) -> &'static str;
    /// The payload's type name, for messages.
    fn payload_type(&self) -> &'static str;
    /// Decodes the JSON of a `data` field; the error text says why not.
    fn decode(&self, json: &str) -> Result<Decoded, String>;
    /// Runs the handler on what [`ErasedHandler::decode`] returned.
    fn handle<'t>(&'t self, tx: &'t mut Tx<'_>, msg: Decoded) -> BoxFuture<'t, Result<()>>;
}

/// The erased form of a [`Handler`].
pub(crate) struct Erased<H>(pub(crate) H);

impl<H: Handler> ErasedHandler for Erased<H> {
    fn stream(&self) -> &'static str {
        self.0.stream()
    }

    fn group(&self) -> &'static str {
        self.0.group()
    }

    fn payload_type(&self) -> &'static str {
        std::any::type_name::<H::Payload>()
    }

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
