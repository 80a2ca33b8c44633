//! Peak resident memory of this process during a queue run (`--rss`).
//!
//! Linux keeps the peak RSS (`VmHWM` in `/proc/self/status`) and resets it
//! to the current RSS when `5` is written to `/proc/self/clear_refs`. A
//! sampler resets it once the worker has started on the stream (so the
//! stream's filling and earlier runs do not count), reads it when the
//! group has handled the checkpoint's count of messages, and the run reads
//! it again at the end: a leak per message shows as growth between the two.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::env::BoxError;

/// Peak resident set size so far, in MiB; `None` without `/proc`.
pub(crate) fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the peak to the current resident size.
fn reset_peak() -> std::io::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
}

/// The peak at the checkpoint: (messages handled when read, MiB).
pub(crate) type Checkpoint = Arc<Mutex<Option<(u64, f64)>>>;

/// Messages of `group` on `stream` delivered and acknowledged so far
/// (`entries-read − pending`, Redis 7).
async fn handled(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<Option<u64>, BoxError> {
    let info: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await?;
    Ok(info
        .groups
        .iter()
        .find(|g| g.name == group)
        .and_then(|g| g.entries_read.map(|read| read.saturating_sub(g.pending)))
        .map(|n| n as u64))
}

/// Polls the group every 20 ms until cancelled: resets the peak when the
/// first message has been read, and records it in `at` once `checkpoint`
/// messages are handled.
pub(crate) async fn sample(
    client: redis::Client,
    stream: String,
    group: &'static str,
    checkpoint: u64,
    at: Checkpoint,
) -> Result<(), BoxError> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut reset = false;
    loop {
        // Before the worker creates its group, XINFO answers an error.
        if let Ok(Some(n)) = handled(&mut conn, &stream, group).await {
            if !reset {
                reset_peak()?;
                reset = true;
            }
            if n >= checkpoint {
                if let Ok(mut slot) = at.lock() {
                    *slot = peak_mib().map(|mib| (n, mib));
                }
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
