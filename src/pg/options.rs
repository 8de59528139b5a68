//! `DATABASE_URL` → [`DbOptions`]: each libpq keyword applied to a tokio-postgres
//! config, with libpq's meaning (spec §4). Splitting the string is conninfo.rs's job;
//! which certificate checks each `sslmode` makes, tls.rs's. A setting is never
//! weakened: what cannot be honoured is an error naming the parameter, and no error
//! repeats a value, which may be a password.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, Host, LoadBalanceHosts, TargetSessionAttrs};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tls::{self, Roots, SslMode, TlsVersions};
use super::url as conninfo;

/// A TCP connect that takes longer than this counts as a failure, unless the URL sets one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive on every database connection, unless the URL says otherwise: an idle
/// connection to a peer that vanished is found dead within about 5 + 3 × 2 s.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVES_RETRIES: u32 = 3;
/// Data sent and unacknowledged for this long means the peer is gone (TCP_USER_TIMEOUT).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// Keywords libpq knows that task-api cannot honour: refused by name, never ignored.
const UNSUPPORTED: [&str; 22] = [
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslkeylogfile",
    "ssl_max_protocol_version",
    "requirepeer",
    "require_auth",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "passfile",
    "replication",
    "min_protocol_version",
    "max_protocol_version",
    "scram_client_key",
    "scram_server_key",
    "oauth_issuer",
    "oauth_client_id",
];

/// A parsed `DATABASE_URL`: where to connect, as whom, and with what TLS.
pub struct DbOptions {
    pub(super) pg: tokio_postgres::Config,
    pub(super) ssl_mode: SslMode,
    pub(super) tls: MakeRustlsConnect,
}

impl DbOptions {
    /// Parses a `postgres://` / `postgresql://` URL or a libpq `key=value` string.
    pub fn parse(text: &str) -> Result<DbOptions, String> {
        let is_uri = text.starts_with("postgres://") || text.starts_with("postgresql://");
        if !is_uri && !text.contains('=') {
            return Err("must be a postgres:// URL or a key=value connection string".into());
        }
        // Where a keyword repeats, the last one wins, as in libpq.
        let mut given = BTreeMap::new();
        for (ordinal, (key, value)) in conninfo::parse(text)?.into_iter().enumerate() {
            if !is_known(&key) {
                // Not shown: a word that is no keyword may be part of a password.
                return Err(format!(
                    "parameter {} is not a libpq connection parameter",
                    ordinal + 1
                ));
            }
            given.insert(key, value);
        }
        Settings(given).apply()
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
        let ports: Vec<String> = self.pg.get_ports().iter().map(u16::to_string).collect();
        let ports = match ports.as_slice() {
            [] => "5432".to_owned(),
            _ => ports.join(","),
        };
        format!(
            "{}@{}:{}/{} sslmode={}",
            self.pg.get_user().unwrap_or_default(),
            hosts.join(","),
            ports,
            self.pg
                .get_dbname()
                .unwrap_or(self.pg.get_user().unwrap_or_default()),
            self.ssl_mode,
        )
    }
}

fn is_known(key: &str) -> bool {
    const SUPPORTED: [&str; 24] = [
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "options",
        "application_name",
        "fallback_application_name",
        "connect_timeout",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "target_session_attrs",
        "load_balance_hosts",
        "sslmode",
        "sslrootcert",
        "channel_binding",
        "sslnegotiation",
        "gssencmode",
        "sslsni",
        "ssl_min_protocol_version",
    ];
    const ACCEPTED: [&str; 2] = ["sslcompression", "client_encoding"];
    SUPPORTED.contains(&key) || ACCEPTED.contains(&key) || UNSUPPORTED.contains(&key)
}

/// The keywords given, by name.
struct Settings(BTreeMap<String, String>);

impl Settings {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn apply(self) -> Result<DbOptions, String> {
        if let Some(key) = UNSUPPORTED.iter().find(|key| self.0.contains_key(**key)) {
            return Err(format!("{key}: not supported by task-api"));
        }
        let mut pg = tokio_postgres::Config::new();
        for host in self.list("host") {
            pg.host(host);
        }
        for addr in self.list("hostaddr") {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| "hostaddr: not an IP address".to_owned())?;
            pg.hostaddr(addr);
        }
        for port in self.list("port") {
            // An empty entry in a list means the default port, as in libpq.
            let port = match port {
                "" => 5432,
                port => port
                    .parse()
                    .map_err(|_| "port: not a port number".to_owned())?,
            };
            pg.port(port);
        }
        if pg.get_hosts().is_empty() && pg.get_hostaddrs().is_empty() {
            return Err("no host given".into());
        }
        match self.get("user") {
            Some(user) if !user.is_empty() => pg.user(user),
            _ => return Err("no user name given".into()),
        };
        if let Some(password) = self.get("password") {
            pg.password(password);
        }
        if let Some(dbname) = self.get("dbname").filter(|d| !d.is_empty()) {
            pg.dbname(dbname);
        }
        if let Some(options) = self.get("options") {
            pg.options(options);
        }
        let application_name = self
            .get("application_name")
            .or(self.get("fallback_application_name"))
            .unwrap_or("task-api");
        pg.application_name(application_name);
        self.timeouts(&mut pg)?;
        self.sessions(&mut pg)?;
        self.refuse_what_cannot_be_honoured()?;
        let (ssl_mode, roots, versions) = self.tls()?;
        pg.ssl_mode(ssl_mode.transport());
        pg.channel_binding(match self.get("channel_binding") {
            None | Some("prefer") => ChannelBinding::Prefer,
            Some("disable") => ChannelBinding::Disable,
            Some("require") => ChannelBinding::Require,
            Some(_) => return Err("channel_binding: not one of disable, prefer, require".into()),
        });
        let tls = tls::connector(ssl_mode, &roots, versions)?;
        Ok(DbOptions { pg, ssl_mode, tls })
    }

    /// The comma-separated entries of a list keyword (`host=h1,h2`).
    fn list(&self, key: &str) -> Vec<&str> {
        match self.get(key) {
            None | Some("") => Vec::new(),
            Some(list) => list.split(',').collect(),
        }
    }

    fn seconds(&self, key: &'static str) -> Result<Option<Duration>, String> {
        self.integer(key)
            .map(|n| n.map(|secs| Duration::from_secs(secs.max(0) as u64)))
    }

    fn integer(&self, key: &'static str) -> Result<Option<i64>, String> {
        self.get(key)
            .map(|text| {
                text.trim()
                    .parse()
                    .map_err(|_| format!("{key}: not an integer"))
            })
            .transpose()
    }

    /// connect_timeout, keepalives and tcp_user_timeout, libpq's units: seconds, but
    /// milliseconds for tcp_user_timeout.
    fn timeouts(&self, pg: &mut tokio_postgres::Config) -> Result<(), String> {
        match self.integer("connect_timeout")? {
            // libpq: zero or negative waits without limit; 1 counts as 2.
            Some(secs) if secs <= 0 => {}
            Some(secs) => {
                pg.connect_timeout(Duration::from_secs(secs.max(2) as u64));
            }
            None => {
                pg.connect_timeout(CONNECT_TIMEOUT);
            }
        }
        pg.keepalives(self.integer("keepalives")? != Some(0));
        pg.keepalives_idle(self.seconds("keepalives_idle")?.unwrap_or(KEEPALIVES_IDLE));
        pg.keepalives_interval(
            self.seconds("keepalives_interval")?
                .unwrap_or(KEEPALIVES_INTERVAL),
        );
        let retries = self
            .integer("keepalives_count")?
            .map(|n| n.clamp(0, 1000) as u32);
        pg.keepalives_retries(retries.unwrap_or(KEEPALIVES_RETRIES));
        match self.integer("tcp_user_timeout")? {
            // libpq: 0 leaves the system default.
            Some(0) => {}
            Some(millis) => {
                pg.tcp_user_timeout(Duration::from_millis(millis.max(0) as u64));
            }
            None => {
                pg.tcp_user_timeout(TCP_USER_TIMEOUT);
            }
        }
        Ok(())
    }

    /// Which of several hosts to use: target_session_attrs and load_balance_hosts.
    fn sessions(&self, pg: &mut tokio_postgres::Config) -> Result<(), String> {
        pg.target_session_attrs(match self.get("target_session_attrs") {
            None | Some("any") => TargetSessionAttrs::Any,
            Some("read-write") => TargetSessionAttrs::ReadWrite,
            Some("read-only") => TargetSessionAttrs::ReadOnly,
            Some("primary" | "standby" | "prefer-standby") => {
                return Err(
                    "target_session_attrs: only any, read-write and read-only are \
                            supported (read-write finds the primary)"
                        .into(),
                );
            }
            Some(_) => return Err("target_session_attrs: not a value libpq knows".into()),
        });
        pg.load_balance_hosts(match self.get("load_balance_hosts") {
            None | Some("disable") => LoadBalanceHosts::Disable,
            Some("random") => LoadBalanceHosts::Random,
            Some(_) => return Err("load_balance_hosts: not one of disable, random".into()),
        });
        Ok(())
    }

    /// Keywords whose values task-api can meet only as libpq's defaults.
    fn refuse_what_cannot_be_honoured(&self) -> Result<(), String> {
        let refuse = |key: &str, allowed: &[&str], why: &str| match self.get(key) {
            Some(value) if !allowed.contains(&value) => Err(format!("{key}: {why}")),
            _ => Ok(()),
        };
        refuse(
            "sslnegotiation",
            &["postgres"],
            "only 'postgres' is supported",
        )?;
        refuse(
            "gssencmode",
            &["disable", "prefer", "allow"],
            "GSSAPI encryption is not supported; use sslmode",
        )?;
        refuse("sslsni", &["1"], "only 1 is supported")?;
        refuse(
            "client_encoding",
            &["UTF8", "utf8", "UTF-8", "utf-8", "auto"],
            "only UTF8 is supported",
        )?;
        Ok(())
    }

    /// sslmode, sslrootcert and ssl_min_protocol_version, with libpq's rules: a root file
    /// turns require into verify-ca; sslrootcert=system means the compiled-in roots,
    /// is the default's verify-full, and is refused with anything weaker; verify-ca needs
    /// a root file, since against every public CA without a name check it would accept
    /// anyone's certificate.
    fn tls(&self) -> Result<(SslMode, Roots, TlsVersions), String> {
        let asked = self.get("sslmode").map(SslMode::parse).transpose()?;
        let roots = match self.get("sslrootcert") {
            None | Some("") => Roots::Default,
            Some("system") => Roots::System,
            Some(path) => Roots::File(path.to_owned()),
        };
        let mode = match (asked, &roots) {
            (None, Roots::System) | (Some(SslMode::VerifyFull), _) => SslMode::VerifyFull,
            (Some(mode), Roots::System) => {
                return Err(format!(
                    "sslrootcert: sslrootcert=system may be used only with \
                     sslmode=verify-full, not {mode}"
                ));
            }
            // libpq: "require" with a root file given behaves as "verify-ca".
            (Some(SslMode::Require), Roots::File(_)) => SslMode::VerifyCa,
            (Some(SslMode::VerifyCa), Roots::Default) => {
                return Err(
                    "sslrootcert: sslmode=verify-ca needs sslrootcert=<file> (the CA \
                            that signed the server's certificate), or use sslmode=verify-full"
                        .into(),
                );
            }
            (Some(mode), _) => mode,
            (None, _) => SslMode::Prefer,
        };
        let versions = match self.get("ssl_min_protocol_version") {
            None | Some("TLSv1" | "TLSv1.1" | "TLSv1.2") => TlsVersions::OneTwoAndUp,
            Some("TLSv1.3") => TlsVersions::OneThreeOnly,
            Some(_) => {
                return Err(
                    "ssl_min_protocol_version: not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3".into(),
                );
            }
        };
        Ok((mode, roots, versions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> SslMode {
        DbOptions::parse(url).unwrap().ssl_mode
    }

    fn refused(url: &str) -> String {
        DbOptions::parse(url).err().expect("refused")
    }

    #[test]
    fn neon_style_url_parses_as_given() {
        let db = DbOptions::parse(
            "postgresql://u:p@ep-x.eu-central-1.aws.neon.tech/db?sslmode=require&channel_binding=require",
        )
        .unwrap();
        assert_eq!(db.ssl_mode, SslMode::Require);
        assert_eq!(db.pg.get_channel_binding(), ChannelBinding::Require);
        assert_eq!(
            db.target(),
            "u@ep-x.eu-central-1.aws.neon.tech:5432/db sslmode=require"
        );
    }

    #[test]
    fn a_question_mark_in_the_password_does_not_cost_the_sslmode() {
        let db = DbOptions::parse("postgresql://u:a?b@host/db?sslmode=require").unwrap();
        assert_eq!(db.ssl_mode, SslMode::Require);
        assert_eq!(db.pg.get_password(), Some(&b"a?b"[..]));
        assert_eq!(db.pg.get_dbname(), Some("db"));
    }

    #[test]
    fn verify_modes_are_understood_in_urls_and_key_values() {
        let db =
            DbOptions::parse("postgres://u@h/d?sslmode=verify-full&application_name=x").unwrap();
        assert_eq!(db.ssl_mode, SslMode::VerifyFull);
        assert_eq!(db.pg.get_application_name(), Some("x"));
        let err = refused("host=h user=u sslmode = 'verify-ca' password='a b\\'c'");
        assert!(err.starts_with("sslrootcert:"), "{err}");
        let db = DbOptions::parse("host=h user=u password='a b\\'c'").unwrap();
        assert_eq!(db.pg.get_password(), Some(&b"a b'c"[..]));
    }

    #[test]
    fn sslrootcert_rules_follow_libpq() {
        assert_eq!(mode("postgres://u@h/d"), SslMode::Prefer);
        // system alone means verify-full; with anything weaker it is refused.
        assert_eq!(
            mode("postgres://u@h/d?sslrootcert=system"),
            SslMode::VerifyFull
        );
        assert_eq!(
            mode("postgres://u@h/d?sslmode=verify-full&sslrootcert=system"),
            SslMode::VerifyFull
        );
        for weaker in ["require", "verify-ca", "prefer", "disable"] {
            let err = refused(&format!(
                "postgres://u@h/d?sslmode={weaker}&sslrootcert=system"
            ));
            assert!(err.starts_with("sslrootcert:"), "{weaker}: {err}");
        }
        let err = refused("postgres://u@h/d?sslmode=verify-ca");
        assert!(err.starts_with("sslrootcert:"), "{err}");
        // require with a root file verifies the chain (and so reads the file).
        let err = refused("postgres://u@h/d?sslmode=require&sslrootcert=/nope.pem");
        assert!(err.contains("/nope.pem"), "{err}");
    }

    #[test]
    fn several_hosts_and_target_session_attrs() {
        let db =
            DbOptions::parse("postgresql://u@h1:5432,h2:5433/d?target_session_attrs=read-write")
                .unwrap();
        assert_eq!(db.pg.get_hosts().len(), 2);
        assert_eq!(db.pg.get_ports(), [5432, 5433]);
        assert_eq!(
            db.pg.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        assert_eq!(db.target(), "u@h1,h2:5432,5433/d sslmode=prefer");
        let db = DbOptions::parse("host=h1,h2 port=5432,5432 user=u").unwrap();
        assert_eq!(db.pg.get_hosts().len(), 2);
        let err = refused("postgres://u@h/d?target_session_attrs=prefer-standby");
        assert!(err.starts_with("target_session_attrs:"), "{err}");
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        for (url, key) in [
            ("postgres://u@h/d?sslcert=/c.pem", "sslcert"),
            ("postgres://u@h/d?gssencmode=require", "gssencmode"),
            ("postgres://u@h/d?sslnegotiation=direct", "sslnegotiation"),
            ("postgres://u@h/d?channel_binding=maybe", "channel_binding"),
        ] {
            assert!(refused(url).starts_with(&format!("{key}:")), "{url}");
        }
    }

    #[test]
    fn libpq_units_for_timeouts() {
        let db = DbOptions::parse(
            "host=h user=u connect_timeout=1 tcp_user_timeout=2500 keepalives_count=7",
        )
        .unwrap();
        assert_eq!(db.pg.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(
            db.pg.get_tcp_user_timeout(),
            Some(&Duration::from_millis(2500))
        );
        assert_eq!(db.pg.get_keepalives_retries(), Some(7));
    }

    #[test]
    fn errors_never_repeat_the_password() {
        for url in [
            "postgres://u:hunter2@h/d?sslmode=bogus",
            "postgres://u:hunter2@h:x/d",
            "host=h password=hunter2 user",
            "host=h password=hun ter2 user=u",
            "host=h user=u password=a hunter2=b",
            "postgres://u:p@h/d?password=a&hunter2",
            "hunter2",
        ] {
            let err = refused(url);
            assert!(
                !err.contains("hunter") && !err.contains("ter2"),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn missing_user_or_host_is_refused_before_connecting() {
        assert!(refused("postgres://h/d").contains("user"));
        assert!(refused("user=u dbname=d").contains("host"));
    }
}
