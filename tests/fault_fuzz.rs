//! Fault case 4: a time-boxed mutation fuzzer over real MediaCMS envelopes through everything a
//! fetched Redis entry meets before a handler runs (`decode_redis`, `args::bind`,
//! `mark_redelivered`, `delivery_tag`). No input may panic: a panic in the decoder would be a
//! worker crash on a poison message. Budget: `FUZZ_SECS` (default 60 with `CI=true`, else 5).

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mediacms_worker::celery::{args, envelope};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::db::shared_dir;
use support::fault::Case;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn budget() -> Duration {
    let default = if std::env::var("CI").as_deref() == Ok("true") {
        60
    } else {
        5
    };
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// Every captured MediaCMS message (Redis list entries, byte for byte).
fn seeds() -> Vec<Vec<u8>> {
    let dir = shared_dir().join("mediacms/messages");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    out.sort();
    assert!(out.len() >= 15, "expected the captured messages in {dir:?}");
    out
}

/// A random JSON value of a type a field would not expect.
fn odd_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..10) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e300),
        4 => json!(-1),
        5 => json!(""),
        6 => json!("\u{0}\u{feff}💥 ../../etc/passwd"),
        7 => json!([]),
        8 => json!({"nested": [1, {"x": null}]}),
        _ => json!(u64::MAX),
    }
}

/// Replace, delete or retype one value somewhere in a JSON tree.
fn mutate_json(v: &mut Value, rng: &mut StdRng, depth: usize) {
    let descend = depth < 4 && rng.random_bool(0.7);
    match v {
        Value::Object(m) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = &keys[rng.random_range(0..keys.len())];
            match rng.random_range(0..4) {
                0 => {
                    m.remove(k);
                }
                1 if descend => mutate_json(m.get_mut(k).unwrap(), rng, depth + 1),
                _ => {
                    m.insert(k.clone(), odd_value(rng));
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.random_range(0..a.len());
            match rng.random_range(0..4) {
                0 => {
                    a.remove(i);
                }
                1 => a.push(odd_value(rng)),
                2 if descend => mutate_json(&mut a[i], rng, depth + 1),
                _ => a[i] = odd_value(rng),
            }
        }
        other => *other = odd_value(rng),
    }
}

/// One mutant of `seed`: byte-level damage, envelope JSON damage, or body (args) damage with a
/// valid base64 re-encoding, so the fuzzer reaches the argument binder too.
fn mutant(seed: &[u8], rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..8) {
        0 => {
            let mut b = seed.to_vec();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            b
        }
        1 => seed[..rng.random_range(0..seed.len())].to_vec(),
        2 => {
            let mut b = seed.to_vec();
            let i = rng.random_range(0..b.len());
            let junk: Vec<u8> = (0..rng.random_range(1..32)).map(|_| rng.random()).collect();
            b.splice(i..i, junk);
            b
        }
        3 => {
            let mut v: Value = serde_json::from_slice(seed).unwrap();
            mutate_json(&mut v, rng, 0);
            serde_json::to_vec(&v).unwrap()
        }
        4 | 5 => {
            // Only the positional/keyword arguments: the envelope stays valid, so the case
            // reaches `args::bind` with wrong types, counts and shapes.
            let mut v: Value = serde_json::from_slice(seed).unwrap();
            let body = B64.decode(v["body"].as_str().unwrap()).unwrap();
            let mut body: Value = serde_json::from_slice(&body).unwrap();
            let part = rng.random_range(0..2);
            mutate_json(&mut body[part], rng, 1);
            v["body"] = json!(B64.encode(serde_json::to_vec(&body).unwrap()));
            serde_json::to_vec(&v).unwrap()
        }
        _ => {
            let mut v: Value = serde_json::from_slice(seed).unwrap();
            let body = B64.decode(v["body"].as_str().unwrap()).unwrap();
            let mut body: Value = serde_json::from_slice(&body).unwrap();
            for _ in 0..rng.random_range(1..4) {
                mutate_json(&mut body, rng, 0);
            }
            v["body"] = json!(B64.encode(serde_json::to_vec(&body).unwrap()));
            if rng.random_bool(0.3) {
                mutate_json(&mut v["headers"], rng, 1);
            }
            serde_json::to_vec(&v).unwrap()
        }
    }
}

/// Everything the broker and the pool do with a fetched entry before a handler runs.
fn exercise(raw: &[u8]) {
    let _ = envelope::delivery_tag(raw);
    if let Ok(task) = envelope::decode_redis(raw) {
        let _ = args::bind(&task);
        let _ = task.redelivered();
    }
    if let Ok(again) = envelope::mark_redelivered(raw) {
        // A requeued entry must still be what it was: decodable iff the original was.
        let before = envelope::decode_redis(raw).is_ok();
        let after = envelope::decode_redis(&again).is_ok();
        assert_eq!(before, after, "mark_redelivered changed decodability");
    }
}

#[test]
fn decoder_survives_mutated_envelopes_for_the_time_budget() {
    let case = Case::new("fuzz_decoder");
    let seeds = seeds();
    let budget = budget();
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    // The default hook would print every caught panic; the first one is reported below.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let start = Instant::now();
    let (mut cases, mut decoded) = (0u64, 0u64);
    let mut first_panic: Option<Vec<u8>> = None;
    while start.elapsed() < budget {
        for _ in 0..256 {
            let raw = mutant(&seeds[rng.random_range(0..seeds.len())], &mut rng);
            cases += 1;
            if envelope::decode_redis(&raw).is_ok() {
                decoded += 1;
            }
            if catch_unwind(AssertUnwindSafe(|| exercise(&raw))).is_err() && first_panic.is_none() {
                first_panic = Some(raw);
            }
        }
    }
    std::panic::set_hook(hook);
    println!(
        "fuzz: {cases} cases in {:.1}s ({decoded} still decodable), seed {seed}",
        start.elapsed().as_secs_f64()
    );
    if let Some(raw) = first_panic {
        panic!(
            "decoder panicked (FUZZ_SEED={seed}) on: {}",
            String::from_utf8_lossy(&raw)
        );
    }
    assert!(cases > 1000, "the fuzzer ran only {cases} cases");
    // Mutants that still decode reach `args::bind`; without them the binder is not fuzzed.
    assert!(decoded > cases / 10, "only {decoded} of {cases} decoded");
    case.survived();
}
