//! Fault case 15 (issue 17, item 5): a flood of junk. 1 000 undecodable 5 MB messages leave at
//! most the configured cap (count and bytes) in the Redis DB MediaCMS shares with its cache,
//! the list has a TTL, and `dead_letters_total` says 1 000. A non-UTF-8 payload is kept
//! byte-exactly (`raw_b64`) and replays (LPUSH of the decoded bytes, the documented procedure)
//! to the very same bytes.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use mediacms_worker::broker::redis::dead;
use mediacms_worker::telemetry::http::probe;
use serde_json::Value;
use support::db::TestDb;
use support::fault::{lpush, wait_until, Case, Endpoints, WorkerProc, DEAD_LETTER, QUEUE};
use support::redis::TestRedis;

const MAX_COUNT: u64 = 50;
const MAX_BYTES: u64 = 12_000_000;
const JUNK_BYTES: usize = 5 * 1024 * 1024;

fn junk_count() -> usize {
    std::env::var("FAULT_DL_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// The sum of `dead_letters_total` over every reason.
fn dead_letters_total(addr: SocketAddr) -> u64 {
    let Ok((200, text)) = probe(addr, "/metrics", Duration::from_secs(5)) else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("mediacms_worker_dead_letters_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn int(c: &mut redis::Connection, cmd: &str, key: &str) -> i64 {
    redis::cmd(cmd).arg(key).query(c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_leaves_at_most_the_cap_and_is_counted() {
    let case = Case::new("dead_letters_capped_and_counted");
    let db = TestDb::new().await;
    let redis = TestRedis::claim();
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoints::in_dir(&redis.url, db.config(), dir.path());
    let (count, bytes) = (MAX_COUNT.to_string(), MAX_BYTES.to_string());
    let args = [
        "--dead-letter-max-count",
        &count,
        "--dead-letter-max-bytes",
        &bytes,
    ];
    let mut w = WorkerProc::spawn(&ep, &dir.path().join("w.log"), &args, &[]);
    let addr = w.http_addr();
    w.wait_consuming();
    let mut c = redis.conn();
    let n = junk_count();
    let started = std::time::Instant::now();
    let mut junk = vec![b'j'; JUNK_BYTES];
    for i in 0..n {
        // A few queued at a time: the flood must not need gigabytes of Redis to be sent.
        wait_until(Duration::from_secs(120), "the queue to drain", || {
            (int(&mut c, "LLEN", QUEUE) < 6).then_some(())
        });
        junk[..8].copy_from_slice(format!("{i:08}").as_bytes());
        lpush(&mut c, QUEUE, &junk);
    }
    wait_until(
        Duration::from_secs(300),
        "1 000 dead letters counted",
        || (dead_letters_total(addr) >= n as u64).then_some(()),
    );
    let took = started.elapsed();
    assert_eq!(dead_letters_total(addr), n as u64, "the counter says {n}");
    let kept = int(&mut c, "LLEN", DEAD_LETTER);
    let records: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(DEAD_LETTER)
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    let total: usize = records.iter().map(Vec::len).sum();
    println!(
        "dead_letters_capped_and_counted: {n} × 5 MB in {took:.1?}; kept {kept} records, {total} bytes (caps {MAX_COUNT}, {MAX_BYTES})"
    );
    assert!(
        kept as u64 <= MAX_COUNT && total as u64 <= MAX_BYTES,
        "over the cap"
    );
    assert!(kept >= 1, "the newest record is kept");
    let counted: i64 = int(&mut c, "GET", &dead::bytes_key(DEAD_LETTER));
    assert_eq!(counted as usize, total, "the byte count matches the list");
    assert!(int(&mut c, "TTL", DEAD_LETTER) > 0, "the list has a TTL");
    assert_eq!(int(&mut c, "HLEN", "unacked"), 0);
    let newest: Value = serde_json::from_slice(&records[0]).unwrap();
    assert_eq!(
        dead::payload(&newest).unwrap().len(),
        JUNK_BYTES,
        "kept exactly"
    );

    // A non-UTF-8 payload: kept byte-exactly, and replayed to the very same bytes.
    let binary: Vec<u8> = vec![0xff, 0xfe, 0x00, 0x80, 0x7b, 0xc3, 0x28, b'x'];
    lpush(&mut c, QUEUE, &binary);
    wait_until(Duration::from_secs(60), "the binary dead letter", || {
        (dead_letters_total(addr) == n as u64 + 1).then_some(())
    });
    let first: Vec<u8> = redis::cmd("LINDEX")
        .arg(DEAD_LETTER)
        .arg(0)
        .query(&mut c)
        .unwrap();
    let record: Value = serde_json::from_slice(&first).unwrap();
    let bytes = dead::payload(&record).expect("payload kept");
    assert_eq!(bytes, binary, "byte-exact: {record}");
    // The documented replay: LPUSH the exact bytes back onto the queue's list.
    lpush(&mut c, QUEUE, &bytes);
    wait_until(Duration::from_secs(60), "the replayed dead letter", || {
        (dead_letters_total(addr) == n as u64 + 2).then_some(())
    });
    let again: Vec<u8> = redis::cmd("LINDEX")
        .arg(DEAD_LETTER)
        .arg(0)
        .query(&mut c)
        .unwrap();
    let again: Value = serde_json::from_slice(&again).unwrap();
    assert_eq!(
        dead::payload(&again).unwrap(),
        binary,
        "replayed byte for byte"
    );
    case.survived();
}
