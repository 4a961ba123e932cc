//! A master, its replica and three sentinels; our pyzord on
//! `redis+sentinel://`. Under a stream of reports the master is SIGKILLed:
//! pyzord finds the promoted replica by itself within seconds. With
//! RedisWait = 1 every report it acknowledged is in the new master; without
//! it, the reports lost in the failover are counted and printed (Redis
//! replication is asynchronous, so some may be).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use pyzor_milter::server::config::DEFAULT_CLEANUP_AGE_SECS;
use pyzor_milter::storage::{EngineName, OpenOptions};

use super::{Redis, count, stored_counts};
use crate::faults::backend::{report_stream, stop_stream};
use crate::server_util::{OurServer, TempDir, open_homedir, temp_dir, wait_for};

const MASTER_NAME: &str = "pyzord";
/// How long the sentinels wait for a master's answer before calling it
/// down (Redis's default is 30 s; a test has no time for that).
const DOWN_AFTER_MS: u64 = 1000;
/// How soon pyzord must serve from the new master after the old one died:
/// the sentinels' DOWN_AFTER_MS, their election and the promotion take a
/// few seconds; the rest is slack for a loaded machine.
const FOLLOW_BOUND: Duration = Duration::from_secs(30);

/// The replicated pair and its sentinels.
struct Deployment {
    master: Redis,
    replica: Redis,
    sentinels: Vec<Redis>,
    _dir: TempDir,
}

impl Deployment {
    fn start() -> Self {
        let dir = temp_dir();
        let master = Redis::start(&dir.path().join("master"), &[]);
        let replica = Redis::start(
            &dir.path().join("replica"),
            &[
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                master.port.to_string(),
            ],
        );
        let mut replica_connection = replica.connection();
        wait_for("the replica's sync", Duration::from_secs(20), || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut replica_connection)
                .expect("INFO");
            info.contains("master_link_status:up")
        });
        let sentinels: Vec<Redis> = (0..3)
            .map(|index| {
                Redis::sentinel(
                    &dir.path().join(format!("sentinel-{index}")),
                    MASTER_NAME,
                    master.port,
                    DOWN_AFTER_MS,
                )
            })
            .collect();
        // Each sentinel must know the replica and the other two before a
        // failover can be agreed.
        for sentinel in &sentinels {
            let mut connection = sentinel.connection();
            wait_for("the sentinels", Duration::from_secs(30), || {
                let fields: Vec<String> = redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(MASTER_NAME)
                    .query(&mut connection)
                    .expect("SENTINEL MASTER");
                let field = |name: &str| {
                    let at = fields.iter().position(|field| field == name)?;
                    fields.get(at + 1).cloned()
                };
                field("num-slaves").as_deref() == Some("1")
                    && field("num-other-sentinels").as_deref() == Some("2")
            });
        }
        Self {
            master,
            replica,
            sentinels,
            _dir: dir,
        }
    }

    fn dsn(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The master's port as the first sentinel names it.
    fn named_master(&self) -> u16 {
        let mut connection = self.sentinels[0].connection();
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query(&mut connection)
            .expect("SENTINEL GET-MASTER-ADDR-BY-NAME");
        port
    }
}

/// Kills the master under a report stream; returns (acknowledged reports,
/// of them lost in the new master, seconds until pyzord served again).
fn failover_under_reports(redis_wait: u32) -> (usize, usize, f64) {
    let mut deployment = Deployment::start();
    let home = open_homedir();
    let options = OpenOptions {
        max_age_secs: Some(DEFAULT_CLEANUP_AGE_SECS),
        redis_wait,
        ..OpenOptions::default()
    };
    let ours = OurServer::start_with(EngineName::Redis, &deployment.dsn(), home.path(), options);
    let stop = Arc::new(AtomicBool::new(false));
    let senders = report_stream(ours.address, &stop);
    std::thread::sleep(Duration::from_secs(2));
    deployment.master.kill();
    let killed = Instant::now();
    // A check reads the master: answered once pyzord found the new one.
    let probe = "c".repeat(40);
    let mut thread = 100;
    while count(ours.address, &probe, thread).is_none() {
        assert!(
            killed.elapsed() < FOLLOW_BOUND,
            "pyzord did not find the new master"
        );
        thread += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let followed = killed.elapsed().as_secs_f64();
    assert_eq!(deployment.named_master(), deployment.replica.port);
    std::thread::sleep(Duration::from_secs(1));
    let sent = stop_stream("sentinel failover", &stop, senders);
    let acknowledged: Vec<String> = sent
        .iter()
        .filter(|sent| sent.code == Some(200))
        .map(|sent| sent.digest.clone())
        .collect();
    let before = sent.len() - acknowledged.len();
    assert!(
        acknowledged.len() > 100,
        "{before} refused, too few acknowledged"
    );
    let counts = stored_counts(&mut deployment.replica.connection(), &acknowledged);
    let lost = counts.iter().filter(|count| **count < 1).count();
    (acknowledged.len(), lost, followed)
}

#[test]
fn sentinel_failover_with_redis_wait_keeps_every_acknowledged_report() {
    let (acknowledged, lost, followed) = failover_under_reports(1);
    eprintln!(
        "RedisWait = 1: {acknowledged} reports acknowledged, {lost} lost in the failover, \
         pyzord served from the new master {followed:.1} s after the master was killed"
    );
    assert_eq!(lost, 0, "acknowledged reports lost despite RedisWait = 1");
}

#[test]
fn sentinel_failover_without_redis_wait_is_followed_and_its_loss_measured() {
    let (acknowledged, lost, followed) = failover_under_reports(0);
    eprintln!(
        "RedisWait = 0: {acknowledged} reports acknowledged, {lost} lost in the failover, \
         pyzord served from the new master {followed:.1} s after the master was killed"
    );
}
