//! The Redis commands of the read stage that go over the side connection:
//! creating a group (`XGROUP CREATE`), claiming entries left pending too
//! long (`XAUTOCLAIM`), and reading their delivery counters (`XPENDING`).

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;
use safesync_core::{Error, Result};

use crate::conn::{self, SideConn};
use crate::entry::{self, AutoClaim, Entry, int, items, text};

/// `XGROUP CREATE stream group <from> MKSTREAM`: a new group starts after
/// entry `from` (`0`: the whole stream); an existing group is fine.
pub(crate) async fn create_group(
    side: &SideConn,
    stream: &str,
    group: &str,
    from: &str,
) -> Result<()> {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(from)
        .arg("MKSTREAM");
    match side
        .query::<Value>(&cmd, &format!("XGROUP CREATE `{group}` on `{stream}`"))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if conn::as_redis_error(&e).and_then(conn::code) == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The scan position of `XAUTOCLAIM` for one stream and group: kept across
/// calls, since each call scans only a window of the pending list.
#[derive(Debug)]
pub(crate) struct Cursor(String);

impl Default for Cursor {
    fn default() -> Self {
        Cursor("0-0".to_owned())
    }
}

impl Cursor {
    /// True when the last call finished a full pass over the pending list.
    pub(crate) fn wrapped(&self) -> bool {
        self.0 == "0-0"
    }
}

/// Who claims, and after how long.
pub(crate) struct Claimer<'a> {
    pub(crate) side: &'a SideConn,
    pub(crate) consumer: &'a str,
    pub(crate) min_idle: Duration,
}

impl Claimer<'_> {
    /// `XAUTOCLAIM stream group consumer min-idle cursor COUNT count`,
    /// moving the cursor on.
    pub(crate) async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        cursor: &mut Cursor,
        count: usize,
    ) -> Result<AutoClaim> {
        let min_idle = u64::try_from(self.min_idle.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(stream)
            .arg(group)
            .arg(self.consumer)
            .arg(min_idle)
            .arg(&cursor.0)
            .arg("COUNT")
            .arg(count.max(1));
        let op = format!("XAUTOCLAIM on `{stream}`");
        let reply: Value = self.side.query(&cmd, &op).await?;
        let claim = entry::autoclaim_reply(reply).map_err(|reason| Error::Decode {
            what: format!("the reply to {op}"),
            reason,
        })?;
        cursor.0.clone_from(&claim.next);
        Ok(claim)
    }
}

/// Redis's delivery counter of each of `entries` (pending in `group`);
/// entries no longer pending are missing from the answer.
pub(crate) async fn delivery_counts(
    side: &SideConn,
    stream: &str,
    group: &str,
    entries: &[Entry],
) -> Result<HashMap<String, u64>> {
    if entries.is_empty() {
        return Ok(HashMap::new());
    }
    let mut pipe = redis::pipe();
    for e in entries {
        pipe.cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg(&e.id)
            .arg(&e.id)
            .arg(1);
    }
    let replies: Vec<Value> = side.pipe(&pipe, &format!("XPENDING on `{stream}`")).await?;
    let mut out = HashMap::with_capacity(entries.len());
    for reply in replies {
        // [[id, consumer, idle ms, deliveries]]
        let Some(first) = items(reply)
            .and_then(|l| l.into_iter().next())
            .and_then(items)
        else {
            continue;
        };
        if let (Some(id), Some(n)) = (first.first().and_then(text), first.get(3).and_then(int)) {
            out.insert(id, u64::try_from(n).unwrap_or(0));
        }
    }
    Ok(out)
}
