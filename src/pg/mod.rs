//! PostgreSQL below the store: `DATABASE_URL` exactly as libpq reads it (url.rs, options.rs),
//! `sslmode` on rustls (tls.rs), connecting (connect.rs), the embedded migrations (migrate.rs),
//! the releases that work with them (compat.rs), and the indexes built after (indexes.rs).

pub mod compat;
pub mod connect;
pub mod indexes;
pub mod migrate;
pub mod options;
pub mod tls;
mod url;

pub use options::DbOptions;
