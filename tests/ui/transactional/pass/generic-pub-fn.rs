mod bank {
    use std::fmt::Display;

    use safesync::prelude::*;
    use safesync::transactional;

    /// Documented, public, generic, with a where clause and `impl Trait`.
    #[transactional(retry)]
    pub async fn log<T, const N: usize>(
        tx: &mut Tx<'_>,
        items: [T; N],
        label: impl Display + Clone + Send,
    ) -> Result<usize, Error>
    where
        T: Clone + Display + Send + Sync,
    {
        for item in &items {
            let _ = format!("{label}: {item}");
        }
        tx.execute("SELECT 1").await?;
        Ok(N)
    }

    /// A type parameter only the return type names.
    #[transactional]
    pub(crate) async fn fresh<T: Default + Send>(_tx: &mut Tx<'_>) -> Result<T, Error> {
        Ok(T::default())
    }

    /// Recursion in the body calls the transaction-taking fn.
    #[transactional]
    pub async fn countdown(tx: &mut Tx<'_>, n: u32) -> Result<u32, Error> {
        if n == 0 {
            return Ok(0);
        }
        Box::pin(countdown(tx, n - 1)).await
    }

    pub struct Service;

    impl Service {
        /// An associated fn (no `self`).
        #[transactional(retry)]
        pub async fn ping(tx: &mut Tx<'_>) -> Result<u64, Error> {
            tx.execute("SELECT 1").await
        }
    }
}

#[allow(dead_code)]
async fn call(db: &safesync::Db) -> Result<(), safesync::Error> {
    let n: usize = bank::log(db, [1, 2, 3], "n").await?;
    assert_eq!(n, 3);
    let s: String = bank::fresh(db).await?;
    let _ = bank::fresh::<i64>(db).await?;
    assert!(s.is_empty());
    bank::countdown(db, 3).await?;
    bank::Service::ping(db).await?;
    Ok(())
}

fn main() {}
