//! The SQLite engine's unit tests: counts, paging and cleanup through the
//! [`Storage`] calls, the replay table, the commit queue's bound, and the rollback of a failed
//! transaction. They open their files under the temporary directory and
//! must not depend on one another or on the checkpoint thread's timing.

use super::*;

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pyzor-sqlite-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(DEFAULT_FILE_NAME)
}

#[tokio::test]
async fn reports_and_whitelists_count_separately() {
    let storage = SqliteStorage::open(&temp_path("count")).expect("open");
    let digests = vec!["a".repeat(40), "b".repeat(40)];
    storage
        .increment(Kind::Report, &digests)
        .await
        .expect("report");
    storage
        .increment(Kind::Report, &digests[..1])
        .await
        .expect("report");
    storage
        .increment(Kind::Whitelist, &digests[1..])
        .await
        .expect("whitelist");
    let first = storage
        .get(&digests[0])
        .await
        .expect("get")
        .expect("stored");
    assert_eq!((first.report_count, first.whitelist_count), (2, 0));
    assert!(first.whitelist_entered.is_none() && first.report_entered.is_some());
    let second = storage
        .get(&digests[1])
        .await
        .expect("get")
        .expect("stored");
    assert_eq!((second.report_count, second.whitelist_count), (1, 1));
    assert_eq!(storage.get("c").await.expect("get"), None);
}

#[tokio::test]
async fn scan_pages_through_everything_and_cleanup_removes_old() {
    let storage = SqliteStorage::open(&temp_path("scan")).expect("open");
    let old = Record {
        report_count: 3,
        report_updated: Some(1),
        ..Record::default()
    };
    let records: Vec<_> = (0..5).map(|i| (format!("{i:040}"), old.clone())).collect();
    storage.put_many(&records).await.expect("put");
    let (page, next) = storage.scan(None, 3).await.expect("scan");
    assert_eq!(page.len(), 3);
    let (rest, last) = storage.scan(next, 3).await.expect("scan");
    assert_eq!((rest.len(), last), (2, None));
    assert_eq!(storage.cleanup(60).await.expect("cleanup"), 5);
}

#[test]
fn a_full_commit_queue_refuses_writes_until_its_commit() {
    let storage = SqliteStorage::open(&temp_path("bound")).expect("open");
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let write = |index: usize, digests: usize| {
        let outcomes = Arc::clone(&outcomes);
        let digests = (0..digests)
            .map(|n| format!("{index:020}{n:020}"))
            .collect();
        Queued {
            write: Write::Increment(Kind::Report, digests, None),
            done: Box::new(move |outcome| lock(&outcomes).push((index, outcome))),
        }
    };
    let pending = || {
        storage
            .write_queue()
            .expect("a queue")
            .digests
            .load(Ordering::Relaxed)
    };
    // Nobody commits: the first caller is the committer and waits.
    let per_write = 256;
    let fitting = MAX_PENDING_DIGESTS / per_write;
    assert!(
        storage
            .writer
            .admit((0..fitting).map(|i| write(i, per_write)), &())
    );
    assert_eq!(pending(), MAX_PENDING_DIGESTS);
    // A cleanup is never refused; a report past the bound is, at once.
    let cleanup = Queued {
        write: Write::Cleanup(0),
        done: Box::new(|_| {}),
    };
    assert!(!storage.writer.admit([write(fitting, 1), cleanup], &()));
    let refused: Vec<_> = lock(&outcomes).drain(..).collect();
    assert_eq!(refused.len(), 1);
    assert!(matches!(
        refused[0],
        (index, Err(StorageError::QueueFull { capacity: MAX_PENDING_DIGESTS })) if index == fitting
    ));
    storage.writer.commit_pending(&());
    assert_eq!(lock(&outcomes).len(), fitting);
    assert!(lock(&outcomes).iter().all(|(_, outcome)| outcome.is_ok()));
    assert_eq!(pending(), 0);
    let count: i64 = storage
        .read(|connection| {
            connection.query_row("SELECT COUNT(*) FROM digests", [], |row| row.get(0))
        })
        .expect("count");
    assert_eq!(count as usize, fitting * per_write);
    // Room again.
    assert!(storage.writer.admit([write(fitting + 1, 1)], &()));
    storage.writer.commit_pending(&());
    assert!(matches!(
        lock(&outcomes).last(),
        Some((_, Ok(Applied::Done(0))))
    ));
}

#[test]
fn a_failed_transaction_is_rolled_back_and_the_next_one_commits() {
    let connection = Connection::open(temp_path("rollback")).expect("open");
    connection.execute_batch(SCHEMA).expect("schema");
    let report =
        |connection: &Connection, digest: &str| connection.execute(REPORT, params![digest, 1]);
    let failed = in_transaction(&connection, |connection| {
        report(connection, "a")?;
        connection.execute("INSERT INTO no_such_table VALUES (1)", [])
    });
    assert!(failed.is_err());
    assert!(connection.is_autocommit(), "the transaction was left open");
    in_transaction(&connection, |connection| report(connection, "b")).expect("commit");
    let digests: Vec<String> = connection
        .prepare("SELECT digest FROM digests")
        .expect("select")
        .query_map([], |row| row.get(0))
        .expect("rows")
        .collect::<rusqlite::Result<_>>()
        .expect("digests");
    assert_eq!(digests, ["b"]);
}

/// Reports `digests` as one signed request on this thread; returns what
/// its commit said.
fn signed_report(storage: &SqliteStorage, digests: &[&str], request: SignedRequest) -> Seen {
    let outcome = Arc::new(Mutex::new(None));
    let told = Arc::clone(&outcome);
    let write = LocalWrite {
        kind: Kind::Report,
        digests: digests.iter().map(|digest| (*digest).to_owned()).collect(),
        request: Some(request),
        done: Box::new(move |result| *lock(&told) = Some(result)),
    };
    storage.write_all(vec![write], &());
    let result = lock(&outcome).take();
    result.expect("committed on this thread").expect("commit")
}

#[tokio::test]
async fn a_remembered_request_counts_once_even_after_reopening() {
    let path = temp_path("replay");
    let now = now_secs();
    let request = SignedRequest {
        key: [7; 20],
        forget_at: now + 300,
    };
    let digest = "c".repeat(40);
    {
        let storage = SqliteStorage::open(&path).expect("open");
        assert!(!storage.remembered(&request.key).expect("read"));
        assert_eq!(signed_report(&storage, &[&digest], request), Seen::New);
        assert!(storage.remembered(&request.key).expect("read"));
    }
    let storage = SqliteStorage::open(&path).expect("open again");
    assert_eq!(signed_report(&storage, &[&digest], request), Seen::Replayed);
    let remember = storage.remember(request).expect("a replay table");
    assert_eq!(remember.await.expect("remember"), Seen::Replayed);
    let record = storage.get_now(&digest).expect("read").expect("stored");
    assert_eq!(record.report_count, 1, "the replay was not counted");
    let other = SignedRequest {
        key: [8; 20],
        forget_at: now + 300,
    };
    let remember = storage.remember(other).expect("a replay table");
    assert_eq!(remember.await.expect("remember"), Seen::New);
}

#[test]
fn expired_requests_are_forgotten_twice_as_fast_as_new_ones_come() {
    let storage = SqliteStorage::open(&temp_path("forget")).expect("open");
    let now = now_secs();
    {
        let database = lock(&storage.writer.connection);
        let connection = database.connection().expect("open");
        for index in 0u8..10 {
            connection
                .execute(REMEMBER, params![[index; 20].as_slice(), now - 1])
                .expect("insert");
        }
    }
    let rows = || -> i64 {
        storage
            .read(|connection| {
                connection.query_row("SELECT COUNT(*) FROM replay", [], |row| row.get(0))
            })
            .expect("count")
    };
    let fresh = |index: u8| SignedRequest {
        key: [100 + index; 20],
        forget_at: now + 300,
    };
    assert_eq!(signed_report(&storage, &[], fresh(0)), Seen::New);
    assert_eq!(rows(), 10 - 2 + 1);
    for index in 1..5 {
        assert_eq!(signed_report(&storage, &[], fresh(index)), Seen::New);
    }
    assert_eq!(rows(), 5, "the ten expired went, the five fresh stay");
}
