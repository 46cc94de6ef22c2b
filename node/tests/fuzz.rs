//! Runs every fuzz target of `vmq_node::fuzz` with the stable mutation fuzzer, from its seed
//! corpus in `node/fuzz/corpus/<target>/`, for a bounded time: `VMQ_FUZZ_SECONDS` per target
//! (default 15; the tests run in parallel). The seed comes from `VMQ_FUZZ_SEED`, or from the
//! clock and is then printed with any failure, so that the run can be repeated.
//!
//! A failing input is written to `$CARGO_TARGET_DIR/fuzz-failures/` (or the temporary
//! directory); copied into the target's corpus, it fails the test at once and, once fixed,
//! stays as a regression input. `node/fuzz/README.md` says more.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vmq_node::fuzz::{self, Failure, TARGETS};

const DEFAULT_SECONDS: u64 = 15;
/// Input bytes shown in a failure message; the file has all of them.
const HEX_SHOWN: usize = 256;

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(name)
}

/// The corpus files of `name`, sorted by file name so that runs with one seed are the same.
fn load_corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(name);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("corpus entry").path()).filter(|p| p.is_file()).collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).collect()
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={value}: {e}")))
}

fn seed() -> u64 {
    env_number("VMQ_FUZZ_SEED").unwrap_or_else(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
    })
}

/// FNV-1a: a file name that stays the same for the same input across builds and platforms.
fn content_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a failing input goes, so that it can be replayed.
fn save_failure(failure: &Failure) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join("fuzz-failures");
    let path = dir.join(format!("{}-{:016x}", failure.target, content_hash(&failure.input)));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &failure.input)) {
        eprintln!("could not save the failing input to {}: {e}", path.display());
    }
    path
}

/// Fuzzes the target `name` for the configured time; panics with the failure, if any.
fn fuzz_target(name: &str) {
    let target = fuzz::target(name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    let corpus = load_corpus(name);
    assert!(!corpus.is_empty(), "the corpus of {name} is empty");
    let seconds = env_number("VMQ_FUZZ_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let seed = seed();
    println!("fuzz {name}: {} corpus entries, {seconds} s, VMQ_FUZZ_SEED={seed:#x}", corpus.len());
    match fuzz::fuzz(target, &corpus, Duration::from_secs(seconds), seed) {
        Ok(stats) => println!("fuzz {name}: {} runs in {:.1?}, no failure", stats.runs, stats.elapsed),
        Err(failure) => {
            let path = save_failure(&failure);
            let shown = &failure.input[..failure.input.len().min(HEX_SHOWN)];
            let more = if failure.input.len() > HEX_SHOWN { "..." } else { "" };
            panic!(
                "fuzz target {name} failed (VMQ_FUZZ_SEED={seed:#x}): {}\ninput ({} bytes) saved to {}\n{}{more}",
                failure.message,
                failure.input.len(),
                path.display(),
                hex(shown),
            );
        }
    }
}

#[test]
fn fuzz_mqtt_decoder() {
    fuzz_target("mqtt");
}

#[test]
fn fuzz_proxy_header() {
    fuzz_target("proxy");
}

#[test]
fn fuzz_cluster_frames() {
    fuzz_target("cluster_frames");
}

#[test]
fn fuzz_metadata_wire_formats() {
    fuzz_target("metadata");
}

#[test]
fn fuzz_websocket_upgrade_and_frames() {
    fuzz_target("websocket");
}

#[test]
fn every_target_has_a_corpus_and_a_test() {
    let this_file = include_str!("fuzz.rs");
    for target in TARGETS {
        let name = target.name;
        assert!(!load_corpus(name).is_empty(), "fuzz target {name} has no corpus in {}", corpus_dir(name).display());
        assert!(this_file.contains(&format!("fuzz_target(\"{name}\");")), "fuzz target {name} has no test here");
    }
}

/// The committed corpora hold every seed of `vmq_node::fuzz::seeds` as it is encoded today, and
/// each seed passes its own target (a failing one would fail every run). After a change of a
/// wire format, `VMQ_FUZZ_WRITE_SEEDS=1 cargo test -p vmq-node --test fuzz committed` writes
/// them again: seed files are replaced, other inputs (added by hand or from failures) kept.
#[test]
fn the_committed_corpora_hold_every_seed_as_encoded_today() {
    // Seeds whose bytes change from run to run: an absolute expiry (the wall clock), and the
    // membership set's hash-map order.
    const UNSTABLE_SEEDS: [&str; 3] = ["delivery-full", "rpc-drain", "frame-membership"];
    let write = std::env::var_os("VMQ_FUZZ_WRITE_SEEDS").is_some();
    let mut stale = Vec::new();
    for target in TARGETS {
        let Some(seeds) = fuzz::seeds::for_target(target.name) else {
            panic!("fuzz target {} has no seeds in vmq_node::fuzz::seeds", target.name);
        };
        assert!(seeds.len() >= 5, "{} has only {} seeds", target.name, seeds.len());
        let dir = corpus_dir(target.name);
        for seed in seeds {
            (target.run)(&seed.input);
            let path = dir.join(&seed.name);
            if write {
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &seed.input)).unwrap();
                continue;
            }
            let committed = std::fs::read(&path).ok();
            let current = match committed {
                Some(_) if UNSTABLE_SEEDS.contains(&seed.name.as_str()) => true,
                Some(bytes) => bytes == seed.input,
                None => false,
            };
            if !current {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "corpus files differ from their seeds (VMQ_FUZZ_WRITE_SEEDS=1 rewrites them): {stale:#?}"
    );
}
