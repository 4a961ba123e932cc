//! A three-master Redis Cluster made by `redis-cli --cluster create`, with
//! three of our pyzord nodes on `redis+cluster://`: every node sees every
//! count; a resharding (`redis-cli --cluster reshard`) under report streams
//! to all three loses no acknowledged report; `migrate` copies a single
//! Redis into the cluster and back with every count equal.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use pyzor_milter::storage::EngineName;

use super::{Redis, count, redis_cli, report, stored_counts};
use crate::faults::backend::{report_stream, stop_stream};
use crate::server_util::{OurServer, TempDir, open_homedir, temp_dir, wait_for};

/// Three masters, no replicas.
struct Cluster {
    masters: Vec<Redis>,
    _dir: TempDir,
}

impl Cluster {
    fn start() -> Self {
        let dir = temp_dir();
        let args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
        ]
        .map(str::to_owned)
        .to_vec();
        let masters: Vec<Redis> = (0..3)
            .map(|index| Redis::start(&dir.path().join(format!("node-{index}")), &args))
            .collect();
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(
            masters
                .iter()
                .map(|node| format!("127.0.0.1:{}", node.port)),
        );
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
        redis_cli(&create);
        for node in &masters {
            let mut connection = node.connection();
            wait_for("the cluster", Duration::from_secs(30), || {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut connection)
                    .expect("CLUSTER INFO");
                info.contains("cluster_state:ok")
            });
        }
        Self { masters, _dir: dir }
    }

    fn dsn(&self) -> String {
        let hosts: Vec<String> = self
            .masters
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// A connection that follows the slot map, for the test's own reads.
    fn connection(&self) -> redis::cluster::ClusterConnection {
        let nodes: Vec<String> = self
            .masters
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}/", node.port))
            .collect();
        redis::cluster::ClusterClient::new(nodes)
            .expect("cluster client")
            .get_connection()
            .expect("connect to the cluster")
    }

    fn node_id(&self, index: usize) -> String {
        let port = self.masters[index].port.to_string();
        redis_cli(&[
            "-p".to_owned(),
            port,
            "cluster".to_owned(),
            "myid".to_owned(),
        ])
        .trim()
        .to_owned()
    }

    /// How many keys each master holds.
    fn key_counts(&self) -> Vec<i64> {
        self.masters
            .iter()
            .map(|node| {
                redis::cmd("DBSIZE")
                    .query(&mut node.connection())
                    .expect("DBSIZE")
            })
            .collect()
    }
}

fn digests(prefix: &str, how_many: usize) -> Vec<String> {
    (0..how_many)
        .map(|index| format!("{prefix}{index:0>width$x}", width = 40 - prefix.len()))
        .collect()
}

#[test]
fn cluster_nodes_share_counts_and_a_resharding_loses_no_report() {
    let cluster = Cluster::start();
    let dsn = cluster.dsn();
    let home = open_homedir();
    let nodes: Vec<OurServer> = (0..3)
        .map(|_| OurServer::start(EngineName::Redis, &dsn, home.path()))
        .collect();
    let shared = digests("5a", 60);
    let mut thread = 1;
    for digest in &shared {
        for node in &nodes {
            thread += 1;
            assert_eq!(report(node.address, digest, thread), Some(200));
        }
    }
    for digest in &shared {
        for node in &nodes {
            thread += 1;
            assert_eq!(count(node.address, digest, thread), Some(3), "{digest}");
        }
    }
    let keys = cluster.key_counts();
    assert!(
        keys.iter().all(|keys| *keys > 0),
        "keys per master {keys:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let streams: Vec<_> = nodes
        .iter()
        .map(|node| report_stream(node.address, &stop))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let from = cluster.node_id(0);
    let to = cluster.node_id(1);
    let reshard: Vec<String> = [
        "--cluster",
        "reshard",
        &format!("127.0.0.1:{}", cluster.masters[0].port),
        "--cluster-from",
        &from,
        "--cluster-to",
        &to,
        "--cluster-slots",
        "1500",
        "--cluster-yes",
    ]
    .map(str::to_owned)
    .to_vec();
    let before = cluster.key_counts();
    redis_cli(&reshard);
    std::thread::sleep(Duration::from_secs(1));
    let sent: Vec<_> = streams
        .into_iter()
        .flat_map(|stream| stop_stream("resharding", &stop, stream))
        .collect();
    let after = cluster.key_counts();
    // The three streams send the same digests: each digest's stored count
    // must be at least its acknowledged reports and at most its reports.
    let mut tally: HashMap<&str, (i64, i64)> = HashMap::new();
    for sent in &sent {
        let (acknowledged, all) = tally.entry(&sent.digest).or_default();
        *all += 1;
        *acknowledged += i64::from(sent.code == Some(200));
    }
    let reported: Vec<String> = tally.keys().map(|digest| (*digest).to_owned()).collect();
    let mut connection = cluster.connection();
    let counts = stored_counts(&mut connection, &reported);
    let (mut lost, mut extra) = (0, 0);
    for (digest, stored) in reported.iter().zip(&counts) {
        let (acknowledged, all) = tally[digest.as_str()];
        lost += (acknowledged - stored).max(0);
        extra += (stored - all).max(0);
    }
    let acknowledged: i64 = tally.values().map(|(acknowledged, _)| acknowledged).sum();
    eprintln!(
        "resharding 1500 slots: keys per master {before:?} -> {after:?}, {} reports, \
         {acknowledged} acknowledged, {lost} lost",
        sent.len()
    );
    assert_eq!(lost, 0, "acknowledged reports lost in the resharding");
    assert_eq!(extra, 0, "reports counted more often than sent");
    assert!(acknowledged > 100, "too few reports acknowledged");
    assert!(
        after[1] > before[1],
        "no key moved: {before:?} -> {after:?}"
    );
    for digest in shared.iter().take(10) {
        thread += 1;
        assert_eq!(count(nodes[2].address, digest, thread), Some(3));
    }
}

/// Runs our `migrate` from one Redis DSN to another; its stdout.
fn migrate(from: &str, to: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pyzor-milter"))
        .args([
            "migrate", "--se", "redis", "--sd", from, "--de", "redis", "--dd", to,
        ])
        .output()
        .expect("run migrate");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn migrate_single_to_cluster_and_back_keeps_every_count() {
    let dir = temp_dir();
    let single = Redis::start(&dir.path().join("single"), &[]);
    let back = Redis::start(&dir.path().join("back"), &[]);
    let cluster = Cluster::start();
    let records = digests("b1", 2500);
    let mut source = single.connection();
    let mut pipe = redis::pipe();
    for (index, digest) in records.iter().enumerate() {
        pipe.cmd("HSET")
            .arg(format!("pyzord.digest_v1.{digest}"))
            .arg("r_count")
            .arg(index % 7 + 1)
            .arg("r_entered")
            .arg(1_700_000_000 + index)
            .arg("r_updated")
            .arg(1_700_000_100 + index)
            .arg("wl_count")
            .arg(index % 3)
            .arg("wl_entered")
            .arg(0)
            .arg("wl_updated")
            .arg(0)
            .ignore();
    }
    let () = pipe.query(&mut source).expect("fill the single redis");
    let single_dsn = format!("redis://127.0.0.1:{}", single.port);
    let back_dsn = format!("127.0.0.1,{},,0", back.port);
    let done = migrate(&single_dsn, &cluster.dsn());
    assert!(
        done.contains("2500 records transferred successfully, 0 records failed"),
        "{done}"
    );
    let keys = cluster.key_counts();
    assert_eq!(keys.iter().sum::<i64>(), 2500, "keys per master {keys:?}");
    assert!(
        keys.iter().all(|keys| *keys > 0),
        "keys per master {keys:?}"
    );
    let done = migrate(&cluster.dsn(), &back_dsn);
    assert!(
        done.contains("2500 records transferred successfully, 0 records failed"),
        "{done}"
    );
    let read = |connection: &mut dyn redis::ConnectionLike| -> Vec<Vec<(String, String)>> {
        records
            .iter()
            .map(|digest| {
                let mut fields: Vec<(String, String)> = redis::cmd("HGETALL")
                    .arg(format!("pyzord.digest_v1.{digest}"))
                    .query(connection)
                    .expect("HGETALL");
                fields.sort();
                fields
            })
            .collect()
    };
    let original = read(&mut source);
    assert_eq!(read(&mut cluster.connection()), original);
    assert_eq!(read(&mut back.connection()), original);
}
