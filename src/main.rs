//! The `task-api` binary: parse the command, run it, map the error to an exit code.

use std::process::ExitCode;

use task_api::cli::{self, Command};
use task_api::config::Config;
use task_api::pg::migrate;
use task_api::{Error, healthcheck, http};

// musl's malloc takes a global lock; docs/decisions.md has the numbers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc 3 keeps a freed page 1 s before it hands it back; at mimalloc 2's 10 ms, RSS under
// 4,096 connections is what they hold (docs/performance.md). MIMALLOC_PURGE_DELAY overrides.
unsafe extern "C" {
    safe fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

fn main() -> ExitCode {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        mi_option_set(15, 10); // 15: mi_option_purge_delay in the mimalloc.h Cargo.lock pins
    }
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
