//! Logging set-up: env_logger to stdout (spec §6) by `RUST_LOG` or `LOG_LEVEL`, as text or JSON
//! lines (`LOG_FORMAT`); and [`Quoted`], a client's value in a text line. What to log: the callers.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::kv::{Key, Value, VisitSource};
use serde_json::{Map, Value as Json};

/// How lines are written (`LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `2026-11-30T00:44:19.166026Z INFO  access: GET /health 200 …`
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `message`, and the
    /// record's own fields (an access line's `method`, `path`, `status`, …).
    Json,
}

/// `LOG_FORMAT`'s words.
pub const FORMATS: [(&str, Format); 2] = [("text", Format::Text), ("json", Format::Json)];

/// Starts the logger once. `filter` is an env_logger filter (`info`, `task_api=debug`). Lines
/// that wait ([`Lines`]) go out when one of `runtime`'s threads goes idle, and at the drop.
pub fn init(filter: &str, format: Format, runtime: &mut tokio::runtime::Builder) -> Lines {
    // tokio_postgres's debug output holds statement parameters, which are request bodies
    // (spec §6: never a body, at any level): `warn` at most, unless the filter names it.
    let filter = match filter.contains("tokio_postgres") {
        true => filter.to_owned(),
        false => format!("{filter},tokio_postgres=warn"),
    };
    let mut logger = env_logger::Builder::new();
    let lines =
        Lines(Arc::new(Mutex::new(Batch { bytes: Vec::new(), window: (Instant::now(), 0) })));
    let target = env_logger::Target::Pipe(Box::new(lines.clone()));
    logger.parse_filters(&filter).target(target);
    match format {
        Format::Text => logger.format(|buf, record| {
            let (time, level) = (buf.timestamp_micros(), record.level());
            let (target, message) = (record.target(), record.args());
            writeln!(buf, "{time} {level:<5} {target}: {message}")
        }),
        Format::Json => logger.format(|buf, record| {
            let mut line = Fields(Map::from_iter([
                ("timestamp".into(), buf.timestamp_micros().to_string().into()),
                ("level".into(), record.level().as_str().into()),
                ("target".into(), record.target().into()),
                ("message".into(), record.args().to_string().into()),
            ]));
            let _ = record.key_values().visit(&mut line);
            serde_json::to_writer(&mut *buf, &line.0).map_err(io::Error::other)?;
            writeln!(buf)
        }),
    };
    logger.init();
    runtime.on_thread_park({
        let lines = lines.clone();
        move || lines.write_out()
    });
    lines
}

/// Stdout, in batches under load: a write(2) was most of what a line cost (docs/decisions.md).
/// Past [`BURST`] lines in a millisecond, a line waits in the batch till it passes 8 KiB, a
/// thread of the runtime goes idle, or the drop.
#[derive(Clone)]
pub struct Lines(Arc<Mutex<Batch>>);

/// Lines in a millisecond that are written at once: at a few requests a second, each is.
const BURST: u32 = 4;

struct Batch {
    bytes: Vec<u8>,
    /// The millisecond that counts, and its lines so far.
    window: (Instant, u32),
}

impl Batch {
    /// A line that cannot be written is dropped, as it always was.
    fn write_out(&mut self) {
        let _ = io::stdout().write_all(&self.bytes);
        self.bytes.clear();
    }
}

impl Lines {
    /// Writes out what waits.
    pub fn write_out(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).write_out();
    }
}

impl Write for Lines {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut batch = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now - batch.window.0 > Duration::from_millis(1) {
            batch.window = (now, 0);
        }
        batch.window.1 += 1;
        batch.bytes.extend_from_slice(line);
        if batch.window.1 <= BURST || batch.bytes.len() > 8192 {
            batch.write_out();
        }
        Ok(line.len())
    }

    /// env_logger flushes after each line: a waiting line waits for [`Lines::write_out`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.write_out();
    }
}

/// A record's fields, as JSON values: numbers stay numbers.
struct Fields(Map<String, Json>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let json = (value.to_u64().map(Json::from))
            .or_else(|| value.to_i64().map(Json::from))
            .or_else(|| value.to_f64().map(Json::from))
            .or_else(|| value.to_borrowed_str().map(Json::from))
            .unwrap_or_else(|| value.to_string().into());
        self.0.insert(key.as_str().to_owned(), json);
        Ok(())
    }
}

/// A value a client controls, written so that a line stays one line and its fields
/// cannot be forged (spec §6): bare when printable ASCII without blank, `=`, `"` or `\`;
/// else a logfmt string, `"` and `\` escaped, controls and non-ASCII as `\u{…}`.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = |c: char| c.is_ascii_graphic() && !matches!(c, '"' | '=' | '\\');
        // Nearly every value is plain: checked a byte at a time (a non-ASCII byte is
        // never plain), on every access line.
        if !self.0.is_empty() && self.0.bytes().all(|b| plain(b as char)) {
            return f.write_str(self.0);
        }
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if plain(c) || c == '=' || c == ' ' => f.write_char(c)?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_stay_bare_and_the_rest_is_quoted_and_escaped() {
        // Forged fields and line separators: tests/api/cli.rs, through the binary.
        for (value, shown) in [
            ("abc-123", "abc-123"),
            ("a b=\"c\\", r#""a b=\"c\\""#),
            ("\r\n/caf\u{e9}", r#""\u{d}\u{a}/caf\u{e9}""#),
            ("", r#""""#),
        ] {
            assert_eq!(Quoted(value).to_string(), shown, "{value:?}");
        }
    }
}
