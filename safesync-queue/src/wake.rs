//! What wakes an idle relay: on PostgreSQL a notification on
//! [`OUTBOX_CHANNEL`] (sent by `Stream::send_in`, delivered when its
//! transaction commits) or the loss of the listening connection (a
//! notification may have been missed); everywhere the poll interval.

use std::time::Duration;

use safesync_core::Db;

#[cfg(feature = "postgres")]
use crate::outbox::OUTBOX_CHANNEL;

/// An idle relay's alarm clock.
pub(crate) struct Wake {
    /// The `LISTEN`ing side, on PostgreSQL only.
    #[cfg(feature = "postgres")]
    pg: Option<Listen>,
}

/// A connection of its own (outside the `Db`'s pool, whose size stays the
/// user's) that `LISTEN`s on the outbox channel; `None` while it is down.
#[cfg(feature = "postgres")]
struct Listen {
    pool: sqlx::PgPool,
    listener: Option<sqlx::postgres::PgListener>,
}

impl Wake {
    /// Listens at once on PostgreSQL, so that a commit after this call
    /// wakes the relay even before its first pass ended. A failure is
    /// logged and retried at the next wait; the poll goes on meanwhile.
    pub(crate) async fn new(db: &Db) -> Wake {
        #[cfg(feature = "postgres")]
        {
            let pg = db.as_postgres().map(|pool| Listen {
                pool: sqlx::pool::PoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with((*pool.connect_options()).clone()),
                listener: None,
            });
            let mut wake = Wake { pg };
            if let Some(pg) = &mut wake.pg {
                pg.ensure().await;
            }
            wake
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = db;
            Wake {}
        }
    }

    /// Returns after `poll`, or earlier when a notification came (every
    /// one buffered by then is consumed: one pass serves them all) or the
    /// listening connection was lost and re-established.
    pub(crate) async fn wait(&mut self, poll: Duration) {
        let sleep = tokio::time::sleep(poll);
        tokio::pin!(sleep);
        #[cfg(feature = "postgres")]
        if let Some(pg) = &mut self.pg {
            pg.ensure().await;
            if let Some(listener) = &mut pg.listener {
                tokio::select! {
                    () = &mut sleep => {}
                    got = listener.try_recv() => match got {
                        Ok(Some(_)) => while listener.next_buffered().is_some() {},
                        // Lost and connected again: a pass finds what a
                        // missed notification would have announced.
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "outbox relay: LISTEN connection failed; polling until it is back");
                            pg.listener = None;
                            sleep.await;
                        }
                    },
                }
                return;
            }
        }
        sleep.await;
    }
}

#[cfg(feature = "postgres")]
impl Listen {
    /// Connects and `LISTEN`s when not listening; logs a failure.
    async fn ensure(&mut self) {
        if self.listener.is_some() {
            return;
        }
        let listening = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
            l.ignore_pool_close_event(true);
            l.listen(OUTBOX_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match listening.await {
            Ok(l) => self.listener = Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay: cannot LISTEN on PostgreSQL; polling until it can");
            }
        }
    }
}
