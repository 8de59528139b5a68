//! `DATABASE_URL` → [`DbOptions`]: each libpq keyword, with libpq's meaning (spec §4); what
//! cannot be honoured is an error naming the parameter, never its value (it may be a password).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, Host, LoadBalanceHosts, TargetSessionAttrs};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tls::{self, Roots, SslMode};
use super::url;

/// A TCP connect that takes longer than this counts as a failure, unless the URL sets one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive unless the URL says otherwise: a vanished peer is found in about 5 + 3 × 2 s.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVES_RETRIES: u32 = 3;
/// Data sent and unacknowledged for this long means the peer is gone (TCP_USER_TIMEOUT).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The keywords task-api applies, or accepts with libpq's default value only.
const SUPPORTED: &str = "host hostaddr port dbname user password options application_name \
    fallback_application_name connect_timeout keepalives keepalives_idle keepalives_interval \
    keepalives_count tcp_user_timeout target_session_attrs load_balance_hosts sslmode \
    sslrootcert channel_binding sslnegotiation gssencmode sslsni ssl_min_protocol_version \
    sslcompression client_encoding";
/// Keywords libpq knows that task-api cannot honour: refused by name, never ignored.
const UNSUPPORTED: &str = "sslcert sslkey sslpassword sslcertmode sslcrl sslcrldir \
    sslkeylogfile ssl_max_protocol_version requirepeer require_auth krbsrvname gsslib \
    gssdelegation service passfile replication min_protocol_version max_protocol_version \
    scram_client_key scram_server_key oauth_issuer oauth_client_id";
/// Keywords task-api can meet only with libpq's default values: (keyword, those values, why).
const DEFAULTS_ONLY: [(&str, &str, &str); 4] = [
    ("sslnegotiation", "postgres", "only 'postgres' is supported"),
    ("gssencmode", "disable prefer allow", "GSSAPI encryption is not supported; use sslmode"),
    ("sslsni", "1", "only 1 is supported"),
    ("client_encoding", "UTF8 utf8 UTF-8 utf-8 auto", "only UTF8 is supported"),
];

/// A parsed `DATABASE_URL`: where to connect, as whom, and with what TLS.
#[derive(Clone)]
pub struct DbOptions {
    pub(super) pg: tokio_postgres::Config,
    pub(super) ssl_mode: SslMode,
    pub(super) tls: MakeRustlsConnect,
}

impl DbOptions {
    /// Parses a `postgres://` / `postgresql://` URL or a libpq `key=value` string.
    pub fn parse(text: &str) -> Result<DbOptions, String> {
        Settings::parse(text)?.apply()
    }

    /// Parses as [`DbOptions::parse`] does, into one target a host (a URL of several
    /// standbys, `DATABASE_READ_URL`), each with its own port as libpq pairs them.
    pub fn parse_each_host(text: &str) -> Result<Vec<DbOptions>, String> {
        let settings = Settings::parse(text)?;
        let lists = ["host", "hostaddr", "port"].map(|key| (key, settings.list(key)));
        let count = lists[0].1.len().max(lists[1].1.len()).max(1);
        let one = |n: usize| {
            let mut one = Settings(settings.0.clone());
            for (key, list) in &lists {
                let item = list.get(n).or(list.first());
                one.0.extend(item.map(|item| (key.to_string(), item.to_string())));
            }
            one.apply()
        };
        (0..count).map(one).collect()
    }

    /// Where we connect, fit for a log line: `user@host:port/db sslmode=…`, never the password.
    pub fn target(&self) -> String {
        let user = self.pg.get_user().unwrap_or_default();
        let dbname = self.pg.get_dbname().unwrap_or(user);
        format!("{user}@{}/{dbname} sslmode={}", self.address(), self.ssl_mode)
    }

    /// The server's `host:port` (each, comma-separated, when there are several).
    pub fn address(&self) -> String {
        let pg = &self.pg;
        let name = |host: &Host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        };
        let hosts: Vec<String> = match pg.get_hosts() {
            [] => pg.get_hostaddrs().iter().map(IpAddr::to_string).collect(),
            hosts => hosts.iter().map(name).collect(),
        };
        let ports: Vec<String> = pg.get_ports().iter().map(u16::to_string).collect();
        let ports = if ports.is_empty() { "5432".into() } else { ports.join(",") };
        format!("{}:{ports}", hosts.join(","))
    }
}

// What `{:?}` (the configuration logged at start) shows: the target, never the password.
impl fmt::Debug for DbOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.target(), f)
    }
}

/// The keywords given, by name.
struct Settings(BTreeMap<String, String>);

impl Settings {
    fn parse(text: &str) -> Result<Settings, String> {
        let mut given = BTreeMap::new(); // a repeated keyword: the last wins, as in libpq
        for ((key, value), ordinal) in url::parse(text)?.into_iter().zip(1..) {
            let listed = |list: &str| list.split_whitespace().any(|k| k == key);
            if !listed(SUPPORTED) && !listed(UNSUPPORTED) {
                // Not shown: a word that is no keyword may be part of a password.
                return Err(format!("parameter {ordinal} is not a libpq connection parameter"));
            }
            given.insert(key, value);
        }
        Ok(Settings(given))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The comma-separated entries of a list keyword (`host=h1,h2`).
    fn list(&self, key: &str) -> Vec<&str> {
        self.get(key).filter(|list| !list.is_empty()).map_or(vec![], |l| l.split(',').collect())
    }

    fn integer(&self, key: &'static str) -> Result<Option<i64>, String> {
        let not_integer = |_| format!("{key}: not an integer");
        let parse = |text: &str| text.trim().parse().map_err(not_integer);
        self.get(key).map(parse).transpose()
    }

    /// A keyword in seconds, or `default` when not given.
    fn seconds(&self, key: &'static str, default: Duration) -> Result<Duration, String> {
        let secs = self.integer(key)?;
        Ok(secs.map_or(default, |secs| Duration::from_secs(secs.max(0) as u64)))
    }

    /// The value of `key` among `choices` (named in the error), or `default` when not given.
    fn choice<T: Copy>(&self, key: &str, default: T, choices: &[(&str, T)]) -> Result<T, String> {
        let Some(given) = self.get(key) else { return Ok(default) };
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let found = choices.iter().find(|(name, _)| *name == given).map(|(_, value)| *value);
        found.ok_or_else(|| format!("{key}: not one of {}", names.join(", ")))
    }

    fn apply(self) -> Result<DbOptions, String> {
        if let Some(key) = UNSUPPORTED.split_whitespace().find(|key| self.0.contains_key(*key)) {
            return Err(format!("{key}: not supported by task-api"));
        }
        let mut pg = tokio_postgres::Config::new();
        for host in self.list("host") {
            pg.host(host);
        }
        for addr in self.list("hostaddr") {
            pg.hostaddr(addr.parse().map_err(|_| "hostaddr: not an IP address")?);
        }
        for port in self.list("port") {
            pg.port(match port {
                "" => 5432, // an empty entry: the default, as in libpq
                port => port.parse().map_err(|_| "port: not a port number")?,
            });
        }
        if pg.get_hosts().is_empty() && pg.get_hostaddrs().is_empty() {
            return Err("no host given".into());
        }
        pg.user(self.get("user").filter(|user| !user.is_empty()).ok_or("no user name given")?);
        if let Some(password) = self.get("password") {
            pg.password(password);
        }
        if let Some(dbname) = self.get("dbname").filter(|d| !d.is_empty()) {
            pg.dbname(dbname);
        }
        if let Some(options) = self.get("options") {
            pg.options(options);
        }
        let fallback = self.get("fallback_application_name");
        let application_name = self.get("application_name").or(fallback);
        pg.application_name(application_name.unwrap_or("task-api"));

        // libpq's units: seconds (ms for tcp_user_timeout); connect_timeout ≤ 0 waits on, 1 is 2.
        match self.integer("connect_timeout")? {
            None => pg.connect_timeout(CONNECT_TIMEOUT),
            Some(secs) if secs > 0 => pg.connect_timeout(Duration::from_secs(secs.max(2) as u64)),
            Some(_) => &mut pg,
        };
        pg.keepalives(self.integer("keepalives")? != Some(0));
        pg.keepalives_idle(self.seconds("keepalives_idle", KEEPALIVES_IDLE)?);
        pg.keepalives_interval(self.seconds("keepalives_interval", KEEPALIVES_INTERVAL)?);
        let retries = self.integer("keepalives_count")?.map(|n| n.clamp(0, 1000) as u32);
        pg.keepalives_retries(retries.unwrap_or(KEEPALIVES_RETRIES));
        match self.integer("tcp_user_timeout")? {
            None => pg.tcp_user_timeout(TCP_USER_TIMEOUT),
            Some(0) => &mut pg, // libpq: 0 leaves the system default
            Some(ms) => pg.tcp_user_timeout(Duration::from_millis(ms.max(0) as u64)),
        };

        pg.target_session_attrs(match self.get("target_session_attrs") {
            None | Some("any") => TargetSessionAttrs::Any,
            Some("read-write") => TargetSessionAttrs::ReadWrite,
            Some("read-only") => TargetSessionAttrs::ReadOnly,
            Some("primary" | "standby" | "prefer-standby") => Err("target_session_attrs: only \
                any, read-write and read-only are supported (read-write finds the primary)")?,
            Some(_) => Err("target_session_attrs: not a value libpq knows")?,
        });
        let (disable, random) = (LoadBalanceHosts::Disable, LoadBalanceHosts::Random);
        let balance = [("disable", disable), ("random", random)];
        pg.load_balance_hosts(self.choice("load_balance_hosts", disable, &balance)?);
        for (key, allowed, why) in DEFAULTS_ONLY {
            if self.get(key).is_some_and(|value| !allowed.split(' ').any(|a| a == value)) {
                return Err(format!("{key}: {why}"));
            }
        }

        let (ssl_mode, roots) = self.tls()?;
        // TLS 1.2 is rustls's floor, above libpq's default minimum.
        let (all, tls13) = (rustls::DEFAULT_VERSIONS, &[&rustls::version::TLS13][..]);
        let versions = [("TLSv1", all), ("TLSv1.1", all), ("TLSv1.2", all), ("TLSv1.3", tls13)];
        let versions = self.choice("ssl_min_protocol_version", all, &versions)?;
        pg.ssl_mode(ssl_mode.transport());
        use ChannelBinding::{Disable, Prefer, Require};
        let bindings = [("disable", Disable), ("prefer", Prefer), ("require", Require)];
        pg.channel_binding(self.choice("channel_binding", Prefer, &bindings)?);
        let tls = tls::connector(ssl_mode, &roots, versions)?;
        Ok(DbOptions { pg, ssl_mode, tls })
    }

    /// sslmode and sslrootcert, with libpq's rules: a root file turns require into
    /// verify-ca; sslrootcert=system means the compiled-in roots, is the default's
    /// verify-full, and is refused with anything weaker; verify-ca needs a root file, since
    /// against every public CA without a name check it would accept anyone's certificate.
    fn tls(&self) -> Result<(SslMode, Roots), String> {
        let asked = self.get("sslmode").map(SslMode::parse).transpose()?;
        let roots = match self.get("sslrootcert") {
            None | Some("") => Roots::Default,
            Some("system") => Roots::System,
            Some(path) => Roots::File(path.to_owned()),
        };
        let mode = match (asked, &roots) {
            (None, Roots::System) | (Some(SslMode::VerifyFull), _) => SslMode::VerifyFull,
            (Some(mode), Roots::System) => Err(format!(
                "sslrootcert: sslrootcert=system may be used only with sslmode=verify-full, \
                 not {mode}"
            ))?,
            (Some(SslMode::Require), Roots::File(_)) => SslMode::VerifyCa,
            (Some(SslMode::VerifyCa), Roots::Default) => Err("sslrootcert: sslmode=verify-ca \
                needs sslrootcert=<file> (the CA that signed the server's certificate), or use \
                sslmode=verify-full")?,
            (Some(mode), _) => mode,
            (None, _) => SslMode::Prefer,
        };
        Ok((mode, roots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each string's target, or the start of the error that refuses it, which never repeats
    /// the password (`hunter2`). tests/api/tls.rs has sslrootcert and sslmode against a server,
    /// tests/api/cli.rs a bad sslmode and a bad port through the binary.
    #[test]
    fn follows_libpq() {
        for case in [
            "postgres://u@h/d => u@h:5432/d sslmode=prefer",
            "postgres://u@h1:5432,h2:5433/d => u@h1,h2:5432,5433/d sslmode=prefer",
            "host=h1,h2 port=,5433 user=u => u@h1,h2:5432,5433/u sslmode=prefer",
            "hostaddr=::1 user=u sslmode=require => u@::1:5432/u sslmode=require",
            "host=h user=u target_session_attrs=prefer-standby => target_session_attrs:",
            "host=h user=u channel_binding=maybe => channel_binding:",
            "postgres://h/d => no user name given",
            "user=u dbname=d => no host given",
            "postgres://u:hunter2%g@h => the password holds an invalid percent-encoding",
            "postgres://u:hunter2@h?hunter2 => URI query parameter 1 has no '='",
            "postgres://u:hunter2@h?a=hunter2=x => URI query parameter 1 has more than one '='",
            "postgres://u:p@h/d?password=a&hunter2 => URI query parameter 2 has no '='",
            "host=h password=hunter2 user => word 3 has no '=' after it",
            "host=h password=hun ter2 user=u => word 3 has no '=' after it",
            "host=h password='hunter2 => value 2 has no closing quote",
            "host=h user=u password=a hunter2=b => parameter 4 is not a libpq connection parameter",
            "hunter2 => must be a postgres:// URL or a key=value connection string",
        ] {
            let (text, expected) = case.split_once(" => ").unwrap();
            let got = DbOptions::parse(text).map_or_else(|err| err, |db| db.target());
            let leaked = got.contains("hunter") || got.contains("ter2");
            assert!(got.starts_with(expected) && !leaked, "{text}: {got}");
        }
    }

    #[test]
    fn libpq_units_and_names() {
        let text = "host=h user=u connect_timeout=1 tcp_user_timeout=2500 keepalives_count=7 \
                    application_name=x channel_binding=require";
        let pg = DbOptions::parse(text).unwrap().pg;
        let got =
            (pg.get_connect_timeout(), pg.get_tcp_user_timeout(), pg.get_keepalives_retries());
        let secs = Duration::from_secs_f64;
        assert_eq!(got, (Some(&secs(2.0)), Some(&secs(2.5)), Some(7)));
        let named = (pg.get_application_name(), pg.get_channel_binding());
        assert_eq!(named, (Some("x"), ChannelBinding::Require));
    }
}
