//! `safesync-bench`: runs the standard workloads against raw baselines and
//! prints one JSON line per run, then a summary table. See the library
//! crate's documentation, or `--help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match safesync_bench::Config::from_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results = runtime.block_on(safesync_bench::run(&config));
    println!();
    print!("{}", safesync_bench::summary_table(&results));
    if results.iter().all(|r| r.verified) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
