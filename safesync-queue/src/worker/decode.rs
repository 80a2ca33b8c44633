//! Decoding an entry's payload for its handler, and saying why it cannot
//! be decoded: a message naming the entry, the stream and the type.

use std::panic::AssertUnwindSafe;

use futures_core::future::BoxFuture;

use crate::entry::Entry;
use crate::handler::{Decoded, ErasedHandler, PlainBody, TxBody, panic_message};

/// Why an entry cannot be decoded, as a message.
fn cannot_decode(h: &dyn ErasedHandler, entry: &Entry, reason: String) -> String {
    let what = format!(
        "entry {} of `{}` as `{}`",
        entry.id,
        h.stream(),
        h.payload_type()
    );
    safesync_core::Error::Decode { what, reason }.to_string()
}

/// The JSON text in the entry's `data` field, or why it is not there.
fn data<'e>(h: &dyn ErasedHandler, entry: &'e Entry) -> Result<&'e str, String> {
    let Some(data) = entry.field(crate::DATA_FIELD) else {
        let reason = format!(
            "it has no `{}` field (its fields: {})",
            crate::DATA_FIELD,
            entry.field_names()
        );
        return Err(cannot_decode(h, entry, reason));
    };
    std::str::from_utf8(data).map_err(|e| {
        let reason = format!("its `{}` field is not UTF-8: {e}", crate::DATA_FIELD);
        cannot_decode(h, entry, reason)
    })
}

/// The entry's payload for a transactional handler, or why it has none
/// (a `Deserialize` that panics included).
pub(crate) fn decode(
    h: &dyn ErasedHandler,
    body: &dyn TxBody,
    entry: &Entry,
) -> Result<Decoded, String> {
    let json = data(h, entry)?;
    match std::panic::catch_unwind(AssertUnwindSafe(|| body.decode(json))) {
        Ok(decoded) => decoded.map_err(|e| not_json(h, entry, &e)),
        Err(panic) => {
            let reason = format!(
                "decoding its `{}` field panicked: {}",
                crate::DATA_FIELD,
                panic_message(&*panic)
            );
            Err(cannot_decode(h, entry, reason))
        }
    }
}

/// Why the `data` field is not the handler's payload, from serde's `e`.
fn not_json(h: &dyn ErasedHandler, entry: &Entry, e: &str) -> String {
    let reason = format!("its `{}` field is not such JSON: {e}", crate::DATA_FIELD);
    cannot_decode(h, entry, reason)
}

/// A plain handler's run, decoded and started; `Err` when the payload does
/// not decode. A handler that panics while starting is started as a
/// failed run.
pub(crate) fn start_plain<'h>(
    h: &dyn ErasedHandler,
    body: &'h dyn PlainBody,
    entry: &Entry,
) -> Result<BoxFuture<'h, safesync_core::Result<()>>, String> {
    let json = data(h, entry)?;
    match std::panic::catch_unwind(AssertUnwindSafe(|| body.start(json))) {
        Ok(started) => started.map_err(|e| not_json(h, entry, &e)),
        Err(panic) => {
            let message = panic_message(&*panic);
            Ok(Box::pin(async move {
                std::panic::resume_unwind(Box::new(message));
            }))
        }
    }
}
