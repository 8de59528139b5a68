//! The database connection: `DATABASE_URL` → tokio-postgres config + TLS, single
//! connections and the pool's connection manager, and the start-up wait with backoff
//! (spec §4, §5). Which certificate checks each `sslmode` makes is tls.rs's job; how
//! the pool is used, the store's.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::Error;
use crate::error::describe;
use crate::tls::{self, SslMode};

/// A TCP connect that takes longer than this counts as a failure, unless the URL sets one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Start-up retries double their pause up to this.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// A parsed `DATABASE_URL`: where to connect, as whom, and with what TLS.
pub struct DbOptions {
    pg: tokio_postgres::Config,
    ssl_mode: SslMode,
    tls: MakeRustlsConnect,
}

impl DbOptions {
    /// Parses a `postgres://` / `postgresql://` URL or a libpq `key=value` string.
    /// `sslmode` and `sslrootcert` are taken out and handled here, since
    /// tokio-postgres knows neither `verify-*` nor root files. The error never
    /// repeats the input, which holds the password.
    pub fn parse(url: &str) -> Result<DbOptions, String> {
        let (rest, ssl) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            split_url(url)
        } else if url.contains('=') {
            split_key_values(url)?
        } else {
            return Err("must be a postgres:// URL or a key=value connection string".into());
        };
        let mut pg: tokio_postgres::Config = rest.parse().map_err(|err| describe(&err))?;
        let mut ssl_mode = match &ssl.mode {
            Some(mode) => SslMode::parse(mode)?,
            None => SslMode::Prefer,
        };
        // libpq: "require" with a root file given behaves as "verify-ca".
        if ssl_mode == SslMode::Require && ssl.rootcert.is_some() {
            ssl_mode = SslMode::VerifyCa;
        }
        if pg.get_user().is_none() {
            return Err("no user name given".into());
        }
        if pg.get_hosts().is_empty() && pg.get_hostaddrs().is_empty() {
            return Err("no host given".into());
        }
        pg.ssl_mode(ssl_mode.transport());
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("task-api");
        }
        let tls = tls::connector(ssl_mode, ssl.rootcert.as_deref())?;
        Ok(DbOptions { pg, ssl_mode, tls })
    }

    /// Where we connect, fit for a log line: `user@host:port/db sslmode=…`, never the password.
    pub fn target(&self) -> String {
        let hosts: Vec<String> = match self.pg.get_hosts() {
            [] => self
                .pg
                .get_hostaddrs()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            hosts => hosts
                .iter()
                .map(|host| match host {
                    Host::Tcp(name) => name.clone(),
                    Host::Unix(path) => path.display().to_string(),
                })
                .collect(),
        };
        format!(
            "{}@{}:{}/{} sslmode={}",
            self.pg.get_user().unwrap_or_default(),
            hosts.join(","),
            self.pg.get_ports().first().copied().unwrap_or(5432),
            self.pg
                .get_dbname()
                .unwrap_or(self.pg.get_user().unwrap_or_default()),
            self.ssl_mode,
        )
    }

    /// Opens one connection, outside the pool (migrations use it).
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.pg.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                log::warn!("database connection closed: {}", describe(&err));
            }
        });
        Ok(client)
    }

    /// What a pool needs to open connections like [`DbOptions::connect`]'s.
    pub fn manager(&self) -> Manager {
        Manager::from_config(
            self.pg.clone(),
            self.tls.clone(),
            ManagerConfig {
                // is_closed() only: a query that fails on a dead connection drops it.
                recycling_method: RecyclingMethod::Fast,
            },
        )
    }
}

/// Connects, retrying with backoff for up to `budget` and logging each failure's
/// reason (spec §5). Failures that waiting cannot fix (a wrong password, a missing
/// database, a certificate that does not verify) end the wait at once.
pub async fn connect_with_retry(db: &DbOptions, budget: Duration) -> Result<Client, Error> {
    let deadline = Instant::now() + budget;
    let mut pause = Duration::from_millis(100);
    for attempt in 1.. {
        let err = match db.connect().await {
            Ok(client) => {
                log::info!("connected to {}", db.target());
                return Ok(client);
            }
            Err(err) => err,
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if is_permanent(&err) || remaining.is_zero() {
            return Err(Error::Startup(format!(
                "cannot connect to database {} (attempt {attempt}): {}",
                db.target(),
                describe(&err)
            )));
        }
        let pause_now = pause.min(remaining);
        log::warn!(
            "database {} not ready (attempt {attempt}): {}; retrying in {pause_now:?}",
            db.target(),
            describe(&err)
        );
        tokio::time::sleep(pause_now).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
    unreachable!("the retry loop returns")
}

fn is_permanent(err: &tokio_postgres::Error) -> bool {
    if let Some(code) = err.code() {
        return code == &SqlState::INVALID_PASSWORD
            || code == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || code == &SqlState::INVALID_CATALOG_NAME;
    }
    // tokio-postgres does not expose its error kinds; its Display is the kind alone.
    // A TLS handshake that failed (certificate refused, no TLS on the server) or an
    // authentication exchange we refused (no channel binding) fails the same way again.
    matches!(
        err.to_string().as_str(),
        "error performing TLS handshake" | "authentication error"
    )
}

/// `sslmode` and `sslrootcert`, as the user wrote them.
#[derive(Default)]
struct SslParams {
    mode: Option<String>,
    rootcert: Option<String>,
}

impl SslParams {
    /// Takes the pair if it is ours; gives it back otherwise.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.mode = Some(value),
            "sslrootcert" => self.rootcert = Some(value),
            _ => return false,
        }
        true
    }
}

/// Removes our parameters from a URL's query, leaving the others byte for byte.
fn split_url(url: &str) -> (String, SslParams) {
    let mut ssl = SslParams::default();
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), ssl);
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let Some((key, value)) = form_urlencoded::parse(pair.as_bytes()).next() else {
                return false;
            };
            !ssl.take(&key, value.into_owned())
        })
        .collect();
    if kept.is_empty() {
        (base.to_owned(), ssl)
    } else {
        (format!("{base}?{}", kept.join("&")), ssl)
    }
}

/// Removes our parameters from a libpq `key=value` string. Values may be quoted
/// with `'…'` and escape with `\`, as libpq allows.
fn split_key_values(text: &str) -> Result<(String, SslParams), String> {
    let mut ssl = SslParams::default();
    let mut kept = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!("expected '=' after '{key}'"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        let mut end = text.len();
        loop {
            match chars.next() {
                None if quoted => return Err(format!("unterminated quote in '{key}'")),
                None => break,
                Some((i, '\'')) if quoted => {
                    end = i + 1;
                    break;
                }
                Some((i, c)) if c.is_whitespace() && !quoted => {
                    end = i;
                    break;
                }
                Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                Some((_, c)) => value.push(c),
            }
        }
        if !ssl.take(&key, value) {
            kept.push(&text[start..end]);
        }
    }
    Ok((kept.join(" "), ssl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neon_style_url_parses_as_given() {
        let db = DbOptions::parse(
            "postgresql://u:p@ep-x.eu-central-1.aws.neon.tech/db?sslmode=require&channel_binding=require",
        )
        .unwrap();
        assert_eq!(db.ssl_mode, SslMode::Require);
        assert_eq!(
            db.pg.get_channel_binding(),
            tokio_postgres::config::ChannelBinding::Require
        );
        assert_eq!(
            db.target(),
            "u@ep-x.eu-central-1.aws.neon.tech:5432/db sslmode=require"
        );
    }

    #[test]
    fn verify_modes_are_understood_in_urls_and_key_values() {
        let db =
            DbOptions::parse("postgres://u@h/d?sslmode=verify-full&application_name=x").unwrap();
        assert_eq!(db.ssl_mode, SslMode::VerifyFull);
        assert_eq!(db.pg.get_application_name(), Some("x"));
        let db =
            DbOptions::parse("host=h user=u sslmode = 'verify-ca' password='a b\\'c'").unwrap();
        assert_eq!(db.ssl_mode, SslMode::VerifyCa);
        assert_eq!(db.pg.get_password(), Some(&b"a b'c"[..]));
    }

    #[test]
    fn default_is_prefer_and_require_with_a_root_file_verifies_the_chain() {
        assert_eq!(
            DbOptions::parse("postgres://u@h/d").unwrap().ssl_mode,
            SslMode::Prefer
        );
        let err = DbOptions::parse("postgres://u@h/d?sslmode=require&sslrootcert=/nope.pem")
            .err()
            .unwrap();
        assert!(err.contains("/nope.pem"), "{err}");
    }

    #[test]
    fn other_parameters_survive_byte_for_byte() {
        let (rest, ssl) = split_url("postgres://u@h/d?options=-c%20x%3D1&sslmode=disable");
        assert_eq!(rest, "postgres://u@h/d?options=-c%20x%3D1");
        assert_eq!(ssl.mode.as_deref(), Some("disable"));
    }

    #[test]
    fn errors_never_repeat_the_password() {
        for url in [
            "postgres://u:hunter2@h/d?sslmode=bogus",
            "postgres://u:hunter2@h/d?port=x",
            "host=h password=hunter2 user",
            "hunter2",
        ] {
            let err = DbOptions::parse(url).err().unwrap();
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn missing_user_or_host_is_refused_before_connecting() {
        assert!(
            DbOptions::parse("postgres://h/d")
                .err()
                .unwrap()
                .contains("user")
        );
        assert!(
            DbOptions::parse("user=u dbname=d")
                .err()
                .unwrap()
                .contains("host")
        );
    }
}
