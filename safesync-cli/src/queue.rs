//! `safesync queue …` and `safesync dlq …`: Redis reads and changes.

use std::fmt::Write as _;

use safesync_core::{Error, Result};
use safesync_queue::{DeadLetter, Health, Redis};
use serde_json::{Value, json};

use crate::Output;
use crate::args::{DlqCommand, GroupArgs, QueueCommand};
use crate::output::{Table, human_duration, json_value, millis, one_line, payload_text};

/// Widest reason shown in a `dlq list` row.
const REASON_CELL: usize = 100;
/// Widest payload shown in a `dlq list` row.
const PAYLOAD_CELL: usize = 60;

pub(crate) async fn queue(cmd: &QueueCommand) -> Result<Output> {
    match cmd {
        QueueCommand::Health {
            stream,
            group,
            redis,
        } => {
            let redis = redis.connect()?;
            health(&redis, stream, group.as_deref()).await
        }
        QueueCommand::Pending { at, limit } => {
            let redis = at.redis.connect()?;
            pending(&redis, at, *limit).await
        }
    }
}

async fn health(redis: &Redis, stream: &str, group: Option<&str>) -> Result<Output> {
    let groups = match group {
        Some(g) => vec![g.to_owned()],
        None => safesync_queue::groups(redis, stream).await?,
    };
    let mut all = Vec::new();
    for g in groups {
        let h = safesync_queue::health(redis, stream, &g).await?;
        all.push((g, h));
    }
    let mut t = Table::new(&[
        "GROUP",
        "LENGTH",
        "LAG",
        "PENDING",
        "OLDEST PENDING IDLE",
        "DEAD LETTERS",
        "CONSUMERS",
    ]);
    let mut c = Table::new(&["GROUP", "CONSUMER", "PENDING", "IDLE"]);
    let mut json_groups = Vec::new();
    for (g, h) in &all {
        t.row(vec![
            g.clone(),
            h.length.to_string(),
            h.lag
                .map_or_else(|| "unknown".to_owned(), |l| l.to_string()),
            h.pending.to_string(),
            h.oldest_pending_idle
                .map_or_else(|| "-".to_owned(), human_duration),
            dead_count(h),
            h.consumers.len().to_string(),
        ]);
        for consumer in &h.consumers {
            c.row(vec![
                g.clone(),
                consumer.name.clone(),
                consumer.pending.to_string(),
                human_duration(consumer.idle),
            ]);
        }
        json_groups.push(health_json(g, h));
    }
    let mut human = format!("stream `{stream}`\n");
    if t.is_empty() {
        human.push_str("no consumer groups\n");
    } else {
        human.push_str(&t.render());
        if !c.is_empty() {
            human.push('\n');
            human.push_str(&c.render());
        }
    }
    Ok(Output {
        human,
        json: json!({ "stream": stream, "groups": json_groups }),
    })
}

/// Dead letters, with the legacy shared key's count when it has any.
fn dead_count(h: &Health) -> String {
    if h.legacy_dead_letters == 0 {
        h.dead_letters.to_string()
    } else {
        format!(
            "{} (+{} in the old shared key)",
            h.dead_letters, h.legacy_dead_letters
        )
    }
}

fn health_json(group: &str, h: &Health) -> Value {
    json!({
        "group": group,
        "length": h.length,
        "lag": h.lag,
        "pending": h.pending,
        "oldest_pending_idle_ms": h.oldest_pending_idle.map(millis),
        "dead_letters": h.dead_letters,
        "legacy_dead_letters": h.legacy_dead_letters,
        "consumers": h.consumers.iter().map(|c| json!({
            "name": c.name,
            "pending": c.pending,
            "idle_ms": millis(c.idle),
        })).collect::<Vec<_>>(),
    })
}

async fn pending(redis: &Redis, at: &GroupArgs, limit: usize) -> Result<Output> {
    let entries = safesync_queue::pending_entries(redis, &at.stream, &at.group, limit).await?;
    let mut t = Table::new(&["ID", "CONSUMER", "IDLE", "DELIVERIES"]);
    for e in &entries {
        t.row(vec![
            e.id.clone(),
            e.consumer.clone(),
            human_duration(e.idle),
            e.deliveries.to_string(),
        ]);
    }
    let human = if entries.is_empty() {
        format!(
            "nothing pending in group `{}` of stream `{}`\n",
            at.group, at.stream
        )
    } else {
        t.render()
    };
    let json = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "consumer": e.consumer,
                "idle_ms": millis(e.idle),
                "deliveries": e.deliveries,
            })
        })
        .collect::<Vec<_>>();
    Ok(Output {
        human,
        json: Value::Array(json),
    })
}

pub(crate) async fn dlq(cmd: &DlqCommand) -> Result<Output> {
    match cmd {
        DlqCommand::List { at } => {
            let redis = at.redis.connect()?;
            let dead = safesync_queue::dead_letters(&redis, &at.stream, &at.group).await?;
            if dead.is_empty() {
                group_exists(&redis, at).await?;
            }
            Ok(list(at, &dead))
        }
        DlqCommand::Show { id, at } => {
            let redis = at.redis.connect()?;
            let dead = safesync_queue::dead_letter(&redis, &at.stream, &at.group, id).await?;
            Ok(show(&dead))
        }
        DlqCommand::Replay { id, all, at } => {
            let redis = at.redis.connect()?;
            let ids = if *all {
                let dead = safesync_queue::dead_letters(&redis, &at.stream, &at.group).await?;
                if dead.is_empty() {
                    group_exists(&redis, at).await?;
                }
                dead.into_iter().map(|d| d.id).collect()
            } else {
                id.iter().cloned().collect::<Vec<_>>()
            };
            let mut replayed = Vec::new();
            for id in ids {
                let new_id =
                    safesync_queue::replay_dead_letter(&redis, &at.stream, &at.group, &id).await?;
                replayed.push((id, new_id));
            }
            Ok(replay(at, &replayed))
        }
        DlqCommand::Purge { at } => {
            let redis = at.redis.connect()?;
            let n = safesync_queue::purge_dead_letters(&redis, &at.stream, &at.group).await?;
            if n == 0 {
                group_exists(&redis, at).await?;
            }
            Ok(Output {
                human: format!(
                    "purged {n} dead letter(s) of group `{}` of stream `{}`\n",
                    at.group, at.stream
                ),
                json: json!({ "stream": at.stream, "group": at.group, "purged": n }),
            })
        }
    }
}

/// `Ok` when the group exists; else [`Error::NotFound`] naming the stream
/// or the group. Asked when a group has no dead letters, so that a
/// mistyped name is an error rather than an empty list (a group that was
/// deleted but still has dead letters lists them).
async fn group_exists(redis: &Redis, at: &GroupArgs) -> Result<()> {
    if safesync_queue::groups(redis, &at.stream)
        .await?
        .contains(&at.group)
    {
        Ok(())
    } else {
        Err(Error::NotFound {
            table: None,
            key: Some(format!(
                "consumer group `{}` of stream `{}`",
                at.group, at.stream
            )),
        })
    }
}

fn list(at: &GroupArgs, dead: &[DeadLetter]) -> Output {
    let mut t = Table::new(&[
        "ID",
        "ORIGINAL ID",
        "CONSUMER",
        "DELIVERIES",
        "REASON",
        "PAYLOAD",
    ]);
    for d in dead {
        t.row(vec![
            d.id.clone(),
            d.original_id.clone(),
            d.consumer.clone(),
            d.deliveries.to_string(),
            one_line(&d.reason, REASON_CELL),
            one_line(&payload(d), PAYLOAD_CELL),
        ]);
    }
    let human = if dead.is_empty() {
        format!(
            "no dead letters in group `{}` of stream `{}`\n",
            at.group, at.stream
        )
    } else {
        t.render()
    };
    Output {
        human,
        json: Value::Array(dead.iter().map(dead_json).collect()),
    }
}

/// The `data` field as text (or escaped bytes); without one, every field.
fn payload(d: &DeadLetter) -> String {
    if let Some(data) = d.data() {
        return payload_text(data);
    }
    d.fields
        .iter()
        .map(|(k, v)| format!("{k}={}", payload_text(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn dead_json(d: &DeadLetter) -> Value {
    json!({
        "id": d.id,
        "original_id": d.original_id,
        "group": d.group,
        "consumer": d.consumer,
        "deliveries": d.deliveries,
        "reason": d.reason,
        "fields": d.fields.iter().map(|(k, v)| json!({ "name": k, "value": json_value(v) })).collect::<Vec<_>>(),
    })
}

fn show(d: &DeadLetter) -> Output {
    let mut human = format!(
        "id:          {}\noriginal id: {}\ngroup:       {}\nconsumer:    {}\ndeliveries:  {}\nreason:      {}\nfields:\n",
        d.id, d.original_id, d.group, d.consumer, d.deliveries, d.reason
    );
    for (k, v) in &d.fields {
        let _ = writeln!(human, "  {k}: {}", payload_text(v));
    }
    Output {
        human,
        json: dead_json(d),
    }
}

fn replay(at: &GroupArgs, replayed: &[(String, String)]) -> Output {
    let to = safesync_queue::replay_key(&at.stream, &at.group);
    let human = if replayed.is_empty() {
        format!(
            "no dead letters to replay in group `{}` of stream `{}`\n",
            at.group, at.stream
        )
    } else {
        replayed.iter().fold(String::new(), |mut s, (id, new_id)| {
            let _ = writeln!(s, "replayed {id} to `{to}` as {new_id}");
            s
        })
    };
    Output {
        human,
        json: json!({
            "replay_stream": to,
            "replayed": replayed.iter().map(|(id, new_id)| json!({ "id": id, "new_id": new_id })).collect::<Vec<_>>(),
        }),
    }
}
