//! TLS (a CA and certificates made by openssl in the test), with and
//! without client certificates, a wrong CA refused; an ACL user that may
//! touch only pyzor's keys with the commands pyzord needs, over TCP and a
//! Unix socket; a wrong password a start-up error that does not show it.

use std::path::Path;
use std::process::{Command, Stdio};

use pyzor_milter::storage::{self, EngineName};

use super::{Redis, count, report};
use crate::server_util::{OurServer, open_homedir, temp_dir};

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

/// `openssl req` making a P-256 key `NAME.key` for the subject CN=NAME
/// into `out`: a self-signed CA with `-x509`, else a request.
fn new_key(dir: &Path, name: &str, x509: bool, out: &str) {
    let (key, subject) = (format!("{name}.key"), format!("/CN={name}"));
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
    ];
    args.extend(["-nodes", "-keyout", &key, "-out", out, "-subj", &subject]);
    if x509 {
        args.extend(["-x509", "-days", "2"]);
    }
    openssl(dir, &args);
}

/// A CA `NAME.crt`/`NAME.key` in `dir`.
fn make_ca(dir: &Path, name: &str) {
    new_key(dir, name, true, &format!("{name}.crt"));
}

/// A certificate `NAME.crt`/`NAME.key` for 127.0.0.1 signed by the CA `ca`.
fn make_cert(dir: &Path, ca: &str, name: &str) {
    let (csr, crt) = (format!("{name}.csr"), format!("{name}.crt"));
    new_key(dir, name, false, &csr);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

/// redis-server on TLS only, its certificate from `ca`; `auth_clients`
/// asks clients for a certificate of that CA.
fn tls_redis(dir: &Path, auth_clients: bool) -> (Redis, u16) {
    let tls_port = crate::server_util::free_port(false);
    let file = |name: &str| dir.join(name).display().to_string();
    let args: Vec<String> = [
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &file("server.crt"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.crt"),
        "--tls-auth-clients",
        if auth_clients { "yes" } else { "no" },
    ]
    .map(str::to_owned)
    .to_vec();
    let redis = Redis::start_on(
        &dir.join(format!("redis-{auth_clients}")),
        0,
        tls_port,
        &args,
    );
    (redis, tls_port)
}

/// The error our storage gives when opening `dsn`, with its causes.
fn open_error(dsn: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(storage::open(EngineName::Redis, dsn, None)) {
        Ok(_) => panic!("{dsn} opened"),
        Err(error) => pyzor_milter::logging::Chain(&error).to_string(),
    }
}

#[test]
fn redis_over_tls_with_and_without_client_certificates() {
    let dir = temp_dir();
    make_ca(dir.path(), "ca");
    make_ca(dir.path(), "other-ca");
    make_cert(dir.path(), "ca", "server");
    make_cert(dir.path(), "ca", "client");
    let file = |name: &str| dir.path().join(name).display().to_string();
    let home = open_homedir();

    let (_anonymous, port) = tls_redis(dir.path(), false);
    let dsn = format!("rediss://127.0.0.1:{port}/0?ca={}", file("ca.crt"));
    let ours = OurServer::start(EngineName::Redis, &dsn, home.path());
    let digest = "7".repeat(40);
    assert_eq!(report(ours.address, &digest, 1), Some(200));
    assert_eq!(count(ours.address, &digest, 2), Some(1));
    drop(ours);
    let wrong_ca = format!("rediss://127.0.0.1:{port}/0?ca={}", file("other-ca.crt"));
    let error = open_error(&wrong_ca);
    assert!(error.contains("UnknownIssuer"), "{error}");

    let (_certified, port) = tls_redis(dir.path(), true);
    let without = format!("rediss://127.0.0.1:{port}?ca={}", file("ca.crt"));
    let error = open_error(&without);
    assert!(error.starts_with("redis failed: "), "{error}");
    let with = format!(
        "{without}&cert={}&key={}",
        file("client.crt"),
        file("client.key")
    );
    let ours = OurServer::start(EngineName::Redis, &with, home.path());
    assert_eq!(report(ours.address, &digest, 3), Some(200));
    assert_eq!(report(ours.address, &digest, 4), Some(200));
    assert_eq!(count(ours.address, &digest, 5), Some(2));
    let missing = format!("{without}&cert=/nonexistent.crt&key={}", file("client.key"));
    assert_eq!(
        open_error(&missing),
        "cannot read the TLS file \"/nonexistent.crt\": No such file or directory (os error 2)"
    );
}

/// What an operator grants pyzord (README, "Scaling pyzord"): its keys, and
/// the commands it sends.
const PYZORD_ACL: &str = "on >s3cret-pw resetkeys ~pyzord.digest_v1.* ~pyzord.replay_v1.* resetchannels -@all \
     +hgetall +eval +hincrby +hsetnx +hset +expire +set +wait +scan +ping +select";

/// Adds the user `pyzord` with [`PYZORD_ACL`]; returns the default user's
/// connection.
fn add_pyzord_user(redis: &Redis) -> redis::Connection {
    let mut admin = redis.connection();
    let mut setuser = redis::cmd("ACL");
    setuser.arg("SETUSER").arg("pyzord");
    setuser.arg(PYZORD_ACL.split_whitespace().collect::<Vec<_>>());
    let () = setuser.query(&mut admin).expect("ACL SETUSER");
    admin
}

#[test]
fn acl_user_limited_to_pyzor_keys_over_tcp_and_unix_socket() {
    let dir = temp_dir();
    let socket = dir.path().join("redis.sock");
    let redis = Redis::start(
        &dir.path().join("redis"),
        &[
            "--unixsocket".to_owned(),
            socket.display().to_string(),
            "--unixsocketperm".to_owned(),
            "700".to_owned(),
        ],
    );
    let mut admin = add_pyzord_user(&redis);
    let home = open_homedir();
    let digest = "a".repeat(40);

    let tcp = format!("redis://pyzord:s3cret-pw@127.0.0.1:{}/2", redis.port);
    let ours = OurServer::start(EngineName::Redis, &tcp, home.path());
    assert_eq!(report(ours.address, &digest, 1), Some(200));
    drop(ours);
    let unix = format!(
        "unix://{}?db=2&user=pyzord&password=s3cret-pw",
        socket.display()
    );
    let ours = OurServer::start(EngineName::Redis, &unix, home.path());
    assert_eq!(report(ours.address, &digest, 2), Some(200));
    assert_eq!(count(ours.address, &digest, 3), Some(2));
    let () = redis::cmd("SELECT")
        .arg(2)
        .query(&mut admin)
        .expect("SELECT");
    let stored: i64 = redis::cmd("HGET")
        .arg(format!("pyzord.digest_v1.{digest}"))
        .arg("r_count")
        .query(&mut admin)
        .expect("HGET");
    assert_eq!(stored, 2);
    // The user may not touch anything else.
    let mut other = redis::Client::open(tcp.as_str())
        .expect("url")
        .get_connection()
        .expect("connect as pyzord");
    let denied = redis::cmd("SET")
        .arg("other")
        .arg(1)
        .query::<()>(&mut other)
        .expect_err("SET is not granted");
    assert!(denied.to_string().contains("NOPERM"), "{denied}");
}

#[test]
fn wrong_password_is_a_start_up_error_without_the_password() {
    let dir = temp_dir();
    let redis = Redis::start(&dir.path().join("redis"), &[]);
    let _admin = add_pyzord_user(&redis);
    let home = open_homedir();
    let dsn = format!("redis://pyzord:Wr0ng-Pa55@127.0.0.1:{}", redis.port);
    let output = Command::new(env!("CARGO_BIN_EXE_pyzor-milter"))
        .args(["pyzord", "--homedir"])
        .arg(home.path())
        .args(["-a", "127.0.0.1", "-p", "0", "-e", "redis", "--dsn", &dsn])
        .output()
        .expect("run our pyzord");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot open the Redis database \"redis://pyzord:***@127.0.0.1:{}\"",
            redis.port
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("Password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("Wr0ng-Pa55"), "{stderr}");
    // The same with the password in pyzor's DSN, and in migrate's errors.
    let legacy = format!("127.0.0.1,{},Wr0ng-Pa55,0", redis.port);
    let output = Command::new(env!("CARGO_BIN_EXE_pyzor-milter"))
        .args([
            "migrate", "--se", "redis", "--sd", &legacy, "--de", "redis", "--dd", &dsn,
        ])
        .output()
        .expect("run migrate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("***"), "{stderr}");
    assert!(!stderr.contains("Wr0ng-Pa55"), "{stderr}");
}
