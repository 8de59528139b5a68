//! TLS to PostgreSQL (spec §4): each `sslmode` against a server whose certificate a test
//! CA made here, for `localhost` only, so one server shows what each mode checks and what
//! it lets through. Runs the real binary; no run may ever print the password.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use hyper::Method;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::helpers::{
    PgServer, assert_no_password, connect, run_cli, send, spawn_server, text, unique, with_dbname,
};

/// The PEM files of a test PKI: a CA, a server certificate it issued for the DNS name
/// `localhost` (not for 127.0.0.1), and an unrelated CA. Removed on drop. The tracing
/// tests' https:// collector uses it too.
pub struct TestPki {
    dir: PathBuf,
    pub ca: PathBuf,
    other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = std::env::temp_dir().join(unique("task-api-tls"));
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let ca = certificate_authority("task-api test CA");
        let other_ca = certificate_authority("task-api unrelated CA");

        let mut params = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("localhost is a valid DNS name");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        let key = KeyPair::generate().expect("generate the server key");
        let cert = params.signed_by(&key, &ca).expect("issue the server cert");

        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap_or_else(|err| panic!("write {name}: {err}"));
            path
        };
        TestPki {
            ca: write("ca.pem", ca.pem()),
            other_ca: write("other-ca.pem", other_ca.pem()),
            server_cert: write("server.crt", cert.pem()),
            server_key: write("server.key", key.serialize_pem()),
            dir,
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to refuse");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("generate the CA key");
    CertifiedIssuer::self_signed(params, key).expect("self-sign the CA")
}

/// `task-api migrate` against `url`, waiting for the database at most `startup_timeout`
/// seconds, and finishing within `limit`.
async fn migrate(url: &str, startup_timeout: &str, limit: Duration) -> Output {
    let env = [("DATABASE_URL", url), ("DATABASE_STARTUP_TIMEOUT", startup_timeout)];
    let output = tokio::time::timeout(limit, run_cli(&["migrate"], &env))
        .await
        .unwrap_or_else(|_| panic!("task-api migrate still running after {limit:?}"));
    // Spec §4: the password is never printed, on success or failure.
    let (stdout, stderr) = text(&output);
    assert_no_password(&(stdout + &stderr));
    output
}

/// `migrate` on a fresh database succeeds: exit 0 and the migration applied.
async fn assert_migrates(case: &str, url: &str) {
    let output = migrate(url, "3", Duration::from_secs(30)).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{case}: migrate failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("applied V1__create_tasks"),
        "{case}: nothing applied\nstdout:\n{stdout}"
    );
}

/// `migrate` exits 1, at the first attempt although it had 60 s to wait (the refusal is
/// permanent), with `reason` in its one error line.
async fn assert_refused_at_once(case: &str, url: &str, reason: &str) {
    let output = migrate(url, "60", Duration::from_secs(15)).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{case}: expected exit 1\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.starts_with("task-api: cannot connect to database")
            && stderr.contains("(attempt 1)")
            && stderr.contains("invalid peer certificate")
            && stderr.contains(reason),
        "{case}: expected an immediate refusal naming {reason:?}\nstderr:\n{stderr}"
    );
    assert!(
        !stdout.contains("applied") && !stdout.contains("not ready"),
        "{case}: it connected or waited\nstdout:\n{stdout}"
    );
}

/// A TLS-enabled server with one empty database per case, so every success must apply V1.
struct Fixture {
    pki: TestPki,
    server: PgServer,
}

impl Fixture {
    async fn new(databases: &[&str]) -> Fixture {
        let pki = TestPki::new();
        let server = PgServer::start(Some((&pki.server_cert, &pki.server_key)));
        let admin = connect(&server.url("127.0.0.1", "sslmode=disable")).await;
        for name in databases {
            admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        }
        Fixture { pki, server }
    }

    /// A URL for database `db` on `host`, with `params` as its query.
    fn url(&self, host: &str, db: &str, params: &str) -> String {
        with_dbname(&self.server.url(host, params), db)
    }
}

/// The URL parameter that names `path` as the trusted roots.
fn rootcert(path: &Path) -> String {
    format!("sslrootcert={}", path.display())
}

#[tokio::test]
async fn each_sslmode_checks_what_libpq_checks_against_a_test_ca() {
    let fx = Fixture::new(&[
        "require_db",
        "verify_full_db",
        "verify_ca_db",
        "neon_db",
        "key_value_db",
        "serve_db",
    ])
    .await;
    let ca = rootcert(&fx.pki.ca);
    let other_ca = rootcert(&fx.pki.other_ca);

    // require encrypts but checks nothing: an unknown CA, and a name the cert lacks.
    assert_migrates("require", &fx.url("127.0.0.1", "require_db", "sslmode=require")).await;

    assert_migrates(
        "verify-full, test CA, localhost",
        &fx.url("localhost", "verify_full_db", &format!("sslmode=verify-full&{ca}")),
    )
    .await;

    assert_refused_at_once(
        "verify-full to 127.0.0.1 (the cert names only localhost)",
        &fx.url("127.0.0.1", "postgres", &format!("sslmode=verify-full&{ca}")),
        "certificate not valid for name \"127.0.0.1\"",
    )
    .await;

    // As in libpq, require with a root file verifies the chain (it becomes verify-ca).
    assert_refused_at_once(
        "require with an unrelated root",
        &fx.url("127.0.0.1", "postgres", &format!("sslmode=require&{other_ca}")),
        "UnknownIssuer",
    )
    .await;

    assert_refused_at_once(
        "verify-ca with an unrelated root",
        &fx.url("localhost", "postgres", &format!("sslmode=verify-ca&{other_ca}")),
        "UnknownIssuer",
    )
    .await;

    // verify-ca checks the chain, not the name.
    assert_migrates(
        "verify-ca, test CA, 127.0.0.1",
        &fx.url("127.0.0.1", "verify_ca_db", &format!("sslmode=verify-ca&{ca}")),
    )
    .await;

    // Without sslrootcert the compiled-in Mozilla roots are used, and the test CA is not one.
    assert_refused_at_once(
        "verify-full without sslrootcert",
        &fx.url("localhost", "postgres", "sslmode=verify-full"),
        "UnknownIssuer",
    )
    .await;

    // The server offers SCRAM-SHA-256-PLUS over TLS; channel_binding=require insists on it.
    assert_migrates(
        "Neon-style URL",
        &fx.url("127.0.0.1", "neon_db", "sslmode=require&channel_binding=require"),
    )
    .await;

    let key_value = format!(
        "host=localhost port={} user=postgres password={} dbname=key_value_db \
         sslmode=verify-full sslrootcert={}",
        fx.server.port,
        PgServer::PASSWORD,
        fx.pki.ca.display()
    );
    assert_migrates("libpq key=value form", &key_value).await;

    // serve over verify-full: ready, and every connection it holds is encrypted.
    let url = fx.url("localhost", "serve_db", &format!("sslmode=verify-full&{ca}"));
    let (_child, addr, output) =
        spawn_server(&[("DATABASE_URL", url.as_str()), ("DATABASE_STARTUP_TIMEOUT", "3")]).await;
    let ready = send(addr, Method::GET, "/ready", &[], "").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["checks"]["database"], "ok", "{}", ready.body);
    let admin = connect(&fx.url("127.0.0.1", "postgres", "sslmode=disable")).await;
    let row = admin
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = 'serve_db' AND a.application_name = 'task-api'",
            &[],
        )
        .await
        .expect("look at the server's connections");
    let (connections, all_tls): (i64, bool) = (row.get(0), row.get(1));
    assert!(connections > 0 && all_tls, "{connections} connections, all TLS: {all_tls}");
    assert_no_password(&output.lock().unwrap());
}

#[tokio::test]
async fn a_server_without_tls_is_refused_when_tls_or_channel_binding_is_required() {
    let server = PgServer::start(None);
    let limit = Duration::from_secs(30);
    let require = server.url("127.0.0.1", "sslmode=require");
    // Channel binding needs TLS: honoured, it cannot be met over plain TCP.
    let binding = server.url("127.0.0.1", "sslmode=prefer&channel_binding=require");
    let (require, binding) =
        tokio::join!(migrate(&require, "3", limit), migrate(&binding, "3", limit),);
    for (case, output, reason) in [
        ("sslmode=require", require, "server does not support TLS"),
        ("channel_binding=require", binding, "server did not use channel binding"),
    ] {
        let (stdout, stderr) = text(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{case}: expected exit 1\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(
            stderr.starts_with("task-api: cannot connect to database") && stderr.contains(reason),
            "{case}: expected {reason:?}\nstderr:\n{stderr}"
        );
        assert!(!stdout.contains("applied"), "{case}: migrated\n{stdout}");
    }
}

#[tokio::test]
async fn a_question_mark_in_the_password_never_costs_the_sslmode() {
    let server = PgServer::start(None);
    let admin = connect(&server.url("127.0.0.1", "sslmode=disable")).await;
    // Two statements: CREATE DATABASE cannot share a transaction.
    for sql in ["CREATE ROLE q LOGIN PASSWORD 'a?b'", "CREATE DATABASE q_db OWNER q"] {
        admin.batch_execute(sql).await.expect(sql);
    }
    let url = |sslmode: &str| {
        format!("postgresql://q:a?b@127.0.0.1:{}/q_db?sslmode={sslmode}", server.port)
    };
    // As psql does: the whole 'a?b' is the password, so sslmode=require is honoured,
    // and a server without TLS is refused rather than spoken to in plaintext.
    let output = migrate(&url("require"), "3", Duration::from_secs(30)).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("server does not support TLS"), "{stderr}");
    // With TLS off, the same password logs in: it was read whole.
    assert_migrates("sslmode=disable, password a?b", &url("disable")).await;
    let output = migrate(&url("disable"), "3", Duration::from_secs(30)).await;
    let (stdout, _) = text(&output);
    assert!(!stdout.contains("a?b"));
    let target = format!("q@127.0.0.1:{}/q_db sslmode=disable", server.port);
    assert!(stdout.contains(&format!("connected to {target}")), "{stdout}");
}

#[tokio::test]
async fn tls_settings_libpq_refuses_are_configuration_errors_naming_the_parameter() {
    for (params, reason) in [
        // verify-ca against every public CA, without a name check, would trust anyone.
        ("sslmode=verify-ca", "sslrootcert: "),
        ("sslmode=verify-ca&sslrootcert=system", "sslrootcert: "),
        ("sslmode=require&sslrootcert=system", "sslrootcert: "),
        ("sslmode=verify-full&sslcert=/client.pem", "sslcert: "),
        ("sslmode=require&gssencmode=require", "gssencmode: "),
        (
            "sslmode=verify_full",
            "sslmode 'verify_full' is not one of disable, prefer, require, verify-ca, verify-full",
        ),
        (
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "sslrootcert /nonexistent/ca.pem: ",
        ),
    ] {
        let url = format!("postgres://u:tls-secret-pw@127.0.0.1:1/d?{params}");
        let output = run_cli(&["migrate"], &[("DATABASE_URL", &url)]).await;
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{params}: {stderr}");
        assert!(
            stderr.starts_with(&format!("task-api: DATABASE_URL: {reason}")),
            "{params}: {stderr}"
        );
        assert!(!(stdout + &stderr).contains("tls-secret-pw"), "{params}");
    }
    // sslrootcert=system alone means verify-full, as in libpq: it verifies, so against a
    // server with no TLS at all it fails to connect (exit 1), not to configure.
    let server = PgServer::start(None);
    let output =
        migrate(&server.url("127.0.0.1", "sslrootcert=system"), "3", Duration::from_secs(30)).await;
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sslmode=verify-full"), "{stderr}");
}
