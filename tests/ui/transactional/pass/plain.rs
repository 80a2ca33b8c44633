use safesync::prelude::*;

#[safesync::transactional]
async fn count(tx: &mut Tx<'_>, name: String) -> Result<u64, Error> {
    tx.execute_with("DELETE FROM t WHERE name = ?", (name,)).await
}

// Without `retry` an argument is moved in once: it need not be `Clone`.
struct NotClone(i64);

#[safesync::transactional]
async fn take(_tx: &mut Tx<'_>, value: NotClone) -> Result<i64, Error> {
    Ok(value.0)
}

// Any error type that safesync's `Error` converts into.
#[derive(Debug)]
struct AppError;

impl From<Error> for AppError {
    fn from(_: Error) -> Self {
        AppError
    }
}

#[safesync::transactional]
async fn app(_tx: &mut Tx<'_>) -> std::result::Result<(), AppError> {
    Err(AppError)
}

#[allow(dead_code)]
async fn call(db: &Db) -> Result<u64, Error> {
    let n = count(db, "t".to_owned()).await?;
    let v = take(db, NotClone(1)).await?;
    let _: Result<(), AppError> = app(db).await;
    Ok(n + v.unsigned_abs())
}

fn main() {}
