//! PostgreSQL, below the store: `DATABASE_URL` read exactly as libpq reads it (url.rs
//! splits it, options.rs says what it means), libpq's `sslmode` on rustls (tls.rs),
//! connecting with the start-up wait (connect.rs), the embedded migrations under an
//! advisory lock (migrate.rs), which releases work with them (compat.rs), and the indexes
//! built concurrently after them (indexes.rs). How the pool is used is the store's business.

pub mod compat;
pub mod connect;
pub mod indexes;
pub mod migrate;
pub mod options;
pub mod tls;
mod url;

pub use options::DbOptions;
