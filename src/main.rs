//! The `task-api` binary: parse the command, run it, map the error to an exit code.

use std::process::ExitCode;

use task_api::cli::{self, Command};
use task_api::config::Config;
use task_api::pg::migrate;
use task_api::{Error, healthcheck, http};

// musl's malloc takes a global lock; docs/decisions.md has the numbers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("task-api: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run() -> Result<(), Error> {
    match cli::parse()? {
        Command::Serve => http::run(Config::from_env()?),
        Command::Migrate => migrate::run(Config::from_env()?),
        Command::Healthcheck(probe) => healthcheck::run(probe),
        Command::Version => {
            println!("task-api {}", task_api::VERSION);
            Ok(())
        }
        Command::Help => {
            print!("{}", cli::USAGE);
            Ok(())
        }
    }
}
