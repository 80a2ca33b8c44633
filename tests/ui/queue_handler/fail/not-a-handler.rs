use safesync::prelude::*;

struct NotAHandler;

fn worker(db: Db, redis: safesync::queue::Redis) -> safesync::Worker {
    safesync::Worker::new(db, redis).handle(NotAHandler)
}

fn main() {
    let _ = worker;
}
