//! `safesync ledger prune` and `safesync locks`: database reads and changes.

use safesync_core::{Db, DbOptions, Result};
use serde_json::{Value, json};

use crate::Output;
use crate::args::{LedgerCommand, LocksArgs};
use crate::output::{Table, human_duration, millis};

/// One connection is all a command needs.
async fn connect(url: &str) -> Result<Db> {
    Db::connect_with(url, DbOptions::default().max_connections(1)).await
}

pub(crate) async fn ledger(cmd: &LedgerCommand) -> Result<Output> {
    let LedgerCommand::Prune { older_than, db } = cmd;
    let db = connect(&db.url).await?;
    let deleted = safesync_queue::prune_ledger(&db, *older_than).await;
    db.close().await;
    let deleted = deleted?;
    Ok(Output {
        human: format!(
            "deleted {deleted} ledger row(s) older than {} from `{}`\n",
            human_duration(*older_than),
            safesync_queue::LEDGER_TABLE
        ),
        json: json!({ "deleted": deleted, "older_than_s": older_than.as_secs() }),
    })
}

pub(crate) async fn locks(args: &LocksArgs) -> Result<Output> {
    let db = connect(&args.db.url).await?;
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let held = db.held_locks(&names).await;
    db.close().await;
    let held = held?;
    let mut t = Table::new(&["NAME", "KEY", "HOLDER", "IN STATE FOR", "DETAIL"]);
    for l in &held {
        t.row(vec![
            l.name.clone().unwrap_or_else(|| "?".to_owned()),
            l.key.map_or_else(|| "-".to_owned(), |k| k.to_string()),
            l.holder.map_or_else(|| "?".to_owned(), |h| h.to_string()),
            l.state_for.map_or_else(|| "-".to_owned(), human_duration),
            l.detail.clone(),
        ]);
    }
    let human = if held.is_empty() {
        "no named locks held\n".to_owned()
    } else {
        t.render()
    };
    let json = held
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "key": l.key,
                "holder": l.holder,
                "state_for_ms": l.state_for.map(millis),
                "detail": l.detail,
            })
        })
        .collect();
    Ok(Output {
        human,
        json: Value::Array(json),
    })
}
