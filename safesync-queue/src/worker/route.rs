//! The read sources of a worker: each handler twice, on its stream and on
//! its group's replay stream, with what that handler runs under. Set once
//! at `run`, never changed: every stage reads the route of a delivery, none
//! writes to it.

use std::sync::Arc;
use std::time::Duration;

use safesync_core::RetryPolicy;

use super::config::Config;
use super::report::{Reporter, Stats};
use crate::handler::ErasedHandler;
use crate::keys::replay_key;
use crate::metrics::QueueMetrics;

/// One read source and the handler its entries go to.
pub(crate) struct Route {
    /// Its place among the worker's routes: tells entries of different
    /// routes apart cheaply.
    pub(crate) index: usize,
    pub(crate) handler: Arc<dyn ErasedHandler>,
    /// The key read: the handler's stream, or its group's replay stream.
    pub(crate) key: String,
    /// True for the replay stream.
    pub(crate) replayed: bool,
    /// The handler's retry policy, or the worker's.
    pub(crate) retry: RetryPolicy,
    /// The handler's timeout, or the worker's.
    pub(crate) timeout: Duration,
    /// Where its counts go.
    pub(crate) report: Reporter,
}

impl Route {
    pub(crate) fn stream(&self) -> &str {
        self.handler.stream()
    }

    pub(crate) fn group(&self) -> &str {
        self.handler.group()
    }
}

/// Each handler twice, with its stream and with its group's replay
/// stream, in that order.
pub(crate) fn routes(
    handlers: Vec<Arc<dyn ErasedHandler>>,
    config: &Config,
    metrics: &QueueMetrics,
    stats: &Arc<Stats>,
) -> Vec<Arc<Route>> {
    let mut out = Vec::with_capacity(handlers.len() * 2);
    for h in handlers {
        let retry = h.retry_policy().unwrap_or(config.retry);
        let timeout = h.timeout().unwrap_or_else(|| config.handler_timeout());
        for replayed in [false, true] {
            let key = if replayed {
                replay_key(h.stream(), h.group())
            } else {
                h.stream().to_owned()
            };
            out.push(Arc::new(Route {
                index: out.len(),
                handler: Arc::clone(&h),
                key,
                replayed,
                retry,
                timeout,
                report: Reporter::new(Arc::clone(stats), metrics.labelled(h.stream(), h.group())),
            }));
        }
    }
    out
}
