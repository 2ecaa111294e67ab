//! The fuzz targets of `fuzz/` (cargo-fuzz, nightly) as a stable test CI runs:
//!
//! - every input in `tests/fuzz-corpus/<target>/` (the seeds, and every input a fuzz run
//!   found crashing, kept as a regression) goes through the same harness as the fuzz target;
//! - a bounded, seeded, structure-aware mutation run (truncation, byte flips, deep nesting,
//!   huge strings, wrong types) over the seeds, for machines without nightly. The seed is
//!   printed; `CK8S_FUZZ_SEED` and `CK8S_FUZZ_MILLIS` replay or lengthen a run.
//!
//! The harness bodies are `fuzz/harness.rs`, the same file the fuzz targets include.

#[path = "../../../fuzz/harness.rs"]
mod harness;

use harness::{admission_review, sdk_walkers};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out: Vec<_> = files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

/// Runs `harness` on one input and names the input if it panics.
fn check(target: &str, name: &str, data: &[u8], harness: fn(&[u8])) {
    if std::panic::catch_unwind(|| harness(data)).is_err() {
        let dump = std::env::temp_dir().join(format!("ck8s-fuzz-{target}-{name}"));
        let _ = std::fs::write(&dump, data);
        panic!(
            "{target} panicked on {name}; input saved to {}\nhelp: copy it into policies/runtime/tests/fuzz-corpus/{target}/ once fixed",
            dump.display()
        );
    }
}

#[test]
fn admission_review_corpus_and_regressions() {
    for (name, data) in corpus("admission_review") {
        check("admission_review", &name, &data, admission_review);
    }
}

#[test]
fn sdk_walkers_corpus_and_regressions() {
    for (name, data) in corpus("sdk_walkers") {
        check("sdk_walkers", &name, &data, sdk_walkers);
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that are the wrong type, absurd or hostile wherever they land.
const WRONG: &[&str] = &[
    "null",
    "true",
    "0",
    "-1",
    "1e999",
    "18446744073709551616",
    "\"\"",
    "[]",
    "{}",
    "[null]",
    "{\"\":null}",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "[[[[[]]]]]",
];

/// One structure-aware mutation of `seed` (the sdk_walkers seeds keep their kind byte).
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        if d.is_empty() {
            d.push(b'{');
        }
        let at = rng.below(d.len());
        match rng.below(9) {
            // truncation
            0 => d.truncate(at),
            // byte flips
            1 => d[at] ^= 1 << rng.below(8),
            2 => d[at] = rng.next() as u8,
            // a structural character somewhere
            3 => {
                let c = b"{}[]\":,\\"[rng.below(8)];
                d.insert(at, c);
            }
            // a value of the wrong type after a colon
            4 => {
                if let Some(colon) = d[at..].iter().position(|&b| b == b':') {
                    let start = at + colon + 1;
                    let end = d[start..]
                        .iter()
                        .position(|&b| b == b',' || b == b'}' || b == b']')
                        .map_or(d.len(), |e| start + e);
                    let w = WRONG[rng.below(WRONG.len())].as_bytes();
                    d.splice(start..end, w.iter().copied());
                }
            }
            // deep nesting at a value position
            5 => {
                if let Some(colon) = d[at..].iter().position(|&b| b == b':') {
                    let n = [10, 127, 128, 129, 255, 256, 257, 5000][rng.below(8)];
                    let (open, close) = if rng.below(2) == 0 {
                        ("[".repeat(n), "]".repeat(n))
                    } else {
                        ("{\"a\":".repeat(n), "}".repeat(n))
                    };
                    let v = format!("{open}1{close}");
                    let pos = at + colon + 1;
                    d.splice(pos..pos, v.bytes());
                    d.insert(pos + v.len(), b',');
                }
            }
            // a huge string
            6 => {
                if let Some(q) = d[at..].iter().position(|&b| b == b'"') {
                    let n = 1 + rng.below(1 << 20);
                    let fill = [b'a', b'\\', b'[', 0xc3][rng.below(4)];
                    let pos = at + q + 1;
                    d.splice(pos..pos, std::iter::repeat_n(fill, n));
                }
            }
            // duplicate a slice (repeated keys, repeated list items)
            7 => {
                let len = rng.below((d.len() - at).min(256)) + 1;
                let chunk: Vec<u8> = d[at..at + len].to_vec();
                d.splice(at..at, chunk);
            }
            // delete a slice
            _ => {
                let len = rng.below((d.len() - at).min(64)) + 1;
                d.drain(at..at + len);
            }
        }
    }
    d
}

fn mutation_run(target: &str, harness: fn(&[u8])) {
    let seed = std::env::var("CK8S_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let millis = std::env::var("CK8S_FUZZ_MILLIS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2500);
    eprintln!("{target}: CK8S_FUZZ_SEED={seed} CK8S_FUZZ_MILLIS={millis}");
    let seeds = corpus(target);
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < Duration::from_millis(millis) {
        let (name, base) = &seeds[rng.below(seeds.len())];
        let data = mutate(&mut rng, base);
        check(target, &format!("{name}-mutant-{runs}"), &data, harness);
        runs += 1;
    }
    eprintln!("{target}: {runs} mutants, no panic");
    assert!(runs > 0);
}

#[test]
fn admission_review_survives_mutated_reviews() {
    mutation_run("admission_review", admission_review);
}

#[test]
fn sdk_walkers_survive_mutated_objects() {
    mutation_run("sdk_walkers", sdk_walkers);
}
