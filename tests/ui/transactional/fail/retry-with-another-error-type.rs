use safesync::prelude::*;

#[derive(Debug)]
struct AppError;

impl From<Error> for AppError {
    fn from(_: Error) -> Self {
        AppError
    }
}

// `retry` decides on safesync's `Error`; other error types work only
// without it.
#[safesync::transactional(retry)]
async fn deposit(_tx: &mut Tx<'_>) -> std::result::Result<(), AppError> {
    Err(AppError)
}

fn main() {}
