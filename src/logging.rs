//! Logging set-up: env_logger writing to stdout (spec §6), filtered by `RUST_LOG`
//! when set, else `LOG_LEVEL`. What gets logged is decided where it happens.

use std::io::Write;

/// Starts the logger once. `filter` is an env_logger filter (`info`, `task_api=debug`).
pub fn init(filter: &str) {
    env_logger::Builder::new()
        .parse_filters(filter)
        .target(env_logger::Target::Stdout)
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}: {}",
                buf.timestamp_micros(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .init();
}
