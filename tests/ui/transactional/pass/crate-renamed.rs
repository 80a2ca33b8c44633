//! `crate = "…"` names safesync where it is renamed or re-exported.

use std::time::Duration;

use safesync as ss;

fn policy() -> ss::RetryPolicy {
    ss::RetryPolicy::default().base_delay(Duration::from_millis(1))
}

#[ss::transactional(crate = "ss")]
async fn once(tx: &mut ss::Tx<'_>) -> Result<u64, ss::Error> {
    tx.execute("SELECT 1").await
}

#[ss::transactional(retry, crate = "ss")]
async fn retried(tx: &mut ss::Tx<'_>, id: i64) -> Result<u64, ss::Error> {
    let _ = id;
    tx.execute("SELECT 1").await
}

mod nested {
    #[crate::ss::transactional(retry = super::policy(), crate = "crate::ss")]
    pub async fn bump(tx: &mut crate::ss::Tx<'_>) -> Result<u64, crate::ss::Error> {
        tx.execute("SELECT 1").await
    }
}

fn main() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = ss::Db::connect("sqlite::memory:").await.unwrap();
        once(&db).await.unwrap();
        retried(&db, 1).await.unwrap();
        nested::bump(&db).await.unwrap();
    });
}
