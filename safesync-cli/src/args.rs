//! The command line, as clap parses it.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Where Redis is when neither `--redis-url` nor `SAFESYNC_REDIS_URL` says.
pub(crate) const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Operations on safesync queues, ledgers and named locks.
///
/// Exit codes: 0 success; 1 an error (unreachable server, unknown stream or
/// group, a backend that cannot answer); 2 a usage error (bad arguments).
/// Passwords in URLs are never printed.
#[derive(Debug, Parser)]
#[command(name = "safesync", version)]
pub(crate) struct Cli {
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// A stream's consumer groups: health and pending entries.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// A consumer group's dead letters: list, show, replay, purge.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The queue's ledger of handled entries.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Named locks held right now, and by which connection.
    Locks(LocksArgs),
}

/// Where Redis is: one node, or a cluster.
#[derive(Debug, Args)]
pub(crate) struct RedisArgs {
    /// Redis URL, `redis://[user:password@]host[:port][/db]`.
    #[arg(long, env = "SAFESYNC_REDIS_URL", hide_env_values = true, default_value = DEFAULT_REDIS_URL)]
    pub(crate) redis_url: String,
    /// A Redis Cluster instead: seed node URLs, comma-separated
    /// (`redis://host:port,redis://host:port`; `rediss://` for TLS); any
    /// reachable node finds the rest. Takes the place of `--redis-url`.
    #[arg(
        long,
        env = "SAFESYNC_REDIS_CLUSTER",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub(crate) redis_cluster: Vec<String>,
}

impl RedisArgs {
    /// The Redis handle: the cluster when seeds are given, else the node.
    pub(crate) fn connect(&self) -> safesync_core::Result<safesync_queue::Redis> {
        if self.redis_cluster.is_empty() {
            safesync_queue::client(&self.redis_url)
        } else {
            safesync_queue::cluster(&self.redis_cluster)
        }
    }

    /// Every URL given, for the passwords never to print.
    pub(crate) fn urls(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.redis_url.as_str())
            .chain(self.redis_cluster.iter().map(String::as_str))
    }
}

/// A database URL.
#[derive(Debug, Args)]
pub(crate) struct DbArgs {
    /// Database URL: `sqlite:path`, `mysql://…`, `postgres://…`.
    #[arg(long = "db", env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) url: String,
}

/// A stream and one of its groups.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    /// The stream's key.
    #[arg(long)]
    pub(crate) stream: String,
    /// The consumer group.
    #[arg(long)]
    pub(crate) group: String,
    #[command(flatten)]
    pub(crate) redis: RedisArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// Length, lag, pending, oldest pending idle time, dead letters and
    /// consumers of one group, or of every group of the stream.
    Health {
        /// The stream's key.
        #[arg(long)]
        stream: String,
        /// One group (default: every group of the stream).
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// The group's pending entries: id, consumer, idle time, deliveries.
    Pending {
        #[command(flatten)]
        at: GroupArgs,
        /// Show at most this many, oldest id first.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// The group's dead letters, oldest first.
    List {
        #[command(flatten)]
        at: GroupArgs,
    },
    /// One dead letter, with every field of the original entry.
    Show {
        /// The dead letter's id (from `dlq list`).
        id: String,
        #[command(flatten)]
        at: GroupArgs,
    },
    /// Hands dead letters back to the group alone (its replay stream).
    Replay {
        /// The dead letter's id (from `dlq list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter of the group.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        at: GroupArgs,
    },
    /// Deletes the group's dead letters (other groups' stay).
    Purge {
        #[command(flatten)]
        at: GroupArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum LedgerCommand {
    /// Deletes ledger rows older than the given age.
    Prune {
        /// Age: a number and a unit, `s`, `m`, `h`, `d` or `w` (`7d`, `36h`).
        #[arg(long, value_parser = parse_age)]
        older_than: Duration,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// `safesync locks`.
#[derive(Debug, Args)]
pub(crate) struct LocksArgs {
    #[command(flatten)]
    pub(crate) db: DbArgs,
    /// A lock name to recognise (repeatable): PostgreSQL and SQLite keep
    /// only a hash of the name; MariaDB without `metadata_lock_info` can
    /// only check names it is given.
    #[arg(long = "name")]
    pub(crate) names: Vec<String>,
}

/// `7d`, `36h`, `90m`, `45s`, `2w`: a whole number and one unit.
pub(crate) fn parse_age(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit; expected s, m, h, d or w, as in `7d`"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number, as in `7d`"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}`; expected s, m, h, d or w"
            ));
        }
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_age;

    #[test]
    fn ages_are_a_number_and_a_unit() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_age("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_age("7").unwrap_err().contains("no unit"));
        assert!(parse_age("d").unwrap_err().contains("whole number"));
        assert!(parse_age("7y").unwrap_err().contains("unknown unit `y`"));
        assert!(parse_age("-1d").is_err());
        assert!(parse_age("99999999999999999999w").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
