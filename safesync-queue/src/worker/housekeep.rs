//! Beside the stages: the housekeeping task (health gauges, idle
//! consumers) and the stop on a signal.

use std::time::Duration;

use crate::handle::Redis;
use tokio_util::sync::CancellationToken;

use crate::metrics::QueueMetrics;

/// Refreshes the health gauges and removes idle consumers, every
/// `housekeeping_every`, until `stop`; never this worker's own consumer,
/// which is idle between reads but alive. Failures are logged, never fatal.
pub(crate) async fn housekeep(
    redis: Redis,
    metrics: QueueMetrics,
    pairs: Vec<(String, String)>,
    every: Duration,
    remove_idle_consumers: Option<Duration>,
    own_consumer: String,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        for (stream, group) in &pairs {
            let (stream, group) = (stream.as_str(), group.as_str());
            match crate::health::health(&redis, stream, group).await {
                Ok(health) => metrics.record_health(stream, group, &health),
                Err(e) => tracing::debug!(stream, group, error = %e, "health refresh failed"),
            }
            if let Some(idle) = remove_idle_consumers {
                match crate::health::remove_idle_consumers_except(
                    &redis,
                    stream,
                    group,
                    idle,
                    Some(&own_consumer),
                )
                .await
                {
                    Ok(removed) if !removed.is_empty() => {
                        tracing::info!(
                            stream,
                            group,
                            ?removed,
                            "removed idle consumers with nothing pending"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(stream, group, error = %e, "removing idle consumers failed");
                    }
                }
            }
        }
    }
}

/// Cancels `stop` on SIGTERM or SIGINT. A signal that cannot be listened
/// to is logged and ignored, never taken as a stop.
pub(crate) async fn cancel_on_signal(stop: CancellationToken) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("stop signal: draining the safesync queue worker");
    stop.cancel();
}
