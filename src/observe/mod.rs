//! What the service tells its operators: logs (env_logger, text or JSON lines), the
//! Prometheus metrics of `/metrics`, and OpenTelemetry traces. It knows no HTTP
//! routes and no SQL: the server and the store report into it.

pub mod logs;
pub mod metrics;
pub mod traces;
