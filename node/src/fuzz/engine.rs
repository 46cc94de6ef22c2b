//! The mutation loop: runs the corpus, then mutated copies of it until the time budget is
//! spent, and stops at the first panic with the input that caused it, shrunk.
//!
//! There is no coverage feedback: nothing tells the loop which inputs reached new code. Mutated
//! inputs join a bounded working set at random, so that mutations stack over generations and
//! reach further from the seeds than one round of mutations would; half of the picks still
//! start from a seed, so the working set cannot drift off into inputs every decoder refuses
//! at its first byte. Coverage-guided runs are cargo-fuzz's job (`node/fuzz`, nightly).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

use super::Target;
use super::mutate::{Rng, mutate};

/// Longest input the engine makes.
pub const MAX_INPUT: usize = 64 * 1024;
/// Most inputs kept for mutation, seeds included.
pub const MAX_WORKING_SET: usize = 4096;
/// One mutated input in this many joins the working set.
const KEEP_ONE_IN: usize = 16;
/// Most attempts, and longest time, spent shrinking a failing input.
const SHRINK_ATTEMPTS: usize = 4096;
const SHRINK_TIME: Duration = Duration::from_secs(2);

/// What a run without failure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inputs run, corpus entries included.
    pub runs: u64,
    /// Corpus entries run first.
    pub corpus: usize,
    /// Inputs in the working set at the end, seeds included.
    pub working_set: usize,
    /// How long the loop ran.
    pub elapsed: Duration,
}

/// An input on which a target panicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The target's name.
    pub target: &'static str,
    /// The input, shrunk as far as a few seconds allow while the panic stays at the same place.
    pub input: Vec<u8>,
    /// The panic's location and message.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fuzz target {} panicked on {} input bytes: {}", self.target, self.input.len(), self.message)
    }
}

impl std::error::Error for Failure {}

/// Runs every entry of `corpus` through `target`, then mutated inputs for `budget`, with
/// mutations drawn from `seed`: the same seed gives the same inputs in the same order, so a
/// failure found with a seed is found again with it (given as much time).
pub fn fuzz(target: &Target, corpus: &[Vec<u8>], budget: Duration, seed: u64) -> Result<Stats, Failure> {
    let _capture = CaptureGuard::start();
    let start = Instant::now();
    let mut stats = Stats { corpus: corpus.len(), ..Stats::default() };
    for input in corpus {
        if let Err(panic) = run(target.run, input) {
            return Err(failure(target, input.clone(), panic));
        }
        stats.runs += 1;
    }
    let mut pool = WorkingSet::new(corpus);
    let mut rng = Rng::new(seed);
    let mut input = Vec::new();
    while start.elapsed() < budget {
        input.clear();
        input.extend_from_slice(pool.pick(&mut rng));
        let other = pool.any(&mut rng);
        // Stacked mutations, 1 to 8 of them: single changes alone rarely get past a checksum
        // or a length check and a value check at once.
        for _ in 0..1usize << rng.below(4) {
            mutate(&mut input, other, &mut rng, MAX_INPUT);
        }
        stats.runs += 1;
        if let Err(panic) = run(target.run, &input) {
            return Err(failure(target, input, panic));
        }
        if rng.one_in(KEEP_ONE_IN) {
            pool.offer(&input, &mut rng);
        }
    }
    stats.working_set = pool.entries.len();
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// The inputs mutations start from: the seeds, which stay, then mutated inputs, which are
/// replaced at random once the set is full.
struct WorkingSet {
    entries: Vec<Vec<u8>>,
    seeds: usize,
    seen: HashSet<u64>,
}

impl WorkingSet {
    fn new(corpus: &[Vec<u8>]) -> Self {
        let mut entries: Vec<Vec<u8>> = corpus.iter().take(MAX_WORKING_SET).cloned().collect();
        if entries.is_empty() {
            entries.push(Vec::new());
        }
        let seen = entries.iter().map(|e| digest(e)).collect();
        WorkingSet { seeds: entries.len(), entries, seen }
    }

    /// The input to mutate next: a seed half the time.
    fn pick(&self, rng: &mut Rng) -> &[u8] {
        let from = if rng.one_in(2) { self.seeds } else { self.entries.len() };
        &self.entries[rng.below(from)]
    }

    fn any(&self, rng: &mut Rng) -> &[u8] {
        &self.entries[rng.below(self.entries.len())]
    }

    fn offer(&mut self, input: &[u8], rng: &mut Rng) {
        if !self.seen.insert(digest(input)) {
            return;
        }
        if self.entries.len() < MAX_WORKING_SET {
            self.entries.push(input.to_vec());
        } else if self.seeds < self.entries.len() {
            let at = self.seeds + rng.below(self.entries.len() - self.seeds);
            self.entries[at] = input.to_vec();
        }
    }
}

fn digest(input: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    input.hash(&mut hasher);
    hasher.finish()
}

/// Where and why a run panicked.
#[derive(Debug, Clone)]
struct Panic {
    location: Option<String>,
    message: String,
}

fn failure(target: &Target, input: Vec<u8>, panic: Panic) -> Failure {
    let (input, panic) = shrink(target.run, input, panic);
    let message = match panic.location {
        Some(location) => format!("panicked at {location}: {}", panic.message),
        None => panic.message,
    };
    Failure { target: target.name, input, message }
}

/// Runs `target` on `input`, turning a panic into its location and message.
fn run(target: fn(&[u8]), input: &[u8]) -> Result<(), Panic> {
    CAPTURED.with(|c| c.borrow_mut().take());
    // The input is only read, and a panicking target leaves no state behind that the next
    // run would see: unwinding out of it is safe.
    match panic::catch_unwind(AssertUnwindSafe(|| target(input))) {
        Ok(()) => Ok(()),
        Err(payload) => Err(CAPTURED
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| Panic { location: None, message: payload_text(payload.as_ref()) })),
    }
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Deletes blocks of a failing input, halving the block size down to single bytes, while the
/// target still panics at the same place: a short input is quicker to understand.
fn shrink(target: fn(&[u8]), mut input: Vec<u8>, mut panic: Panic) -> (Vec<u8>, Panic) {
    let start = Instant::now();
    let mut attempts = 0;
    let mut block = input.len().div_ceil(2).max(1);
    loop {
        let mut at = 0;
        while at < input.len() {
            if attempts >= SHRINK_ATTEMPTS || start.elapsed() >= SHRINK_TIME {
                return (input, panic);
            }
            attempts += 1;
            let end = (at + block).min(input.len());
            let candidate: Vec<u8> = [&input[..at], &input[end..]].concat();
            match run(target, &candidate) {
                Err(again) if again.location == panic.location => {
                    input = candidate;
                    panic = again;
                }
                _ => at += block,
            }
        }
        if block == 1 {
            return (input, panic);
        }
        block = block.div_ceil(2);
    }
}

thread_local! {
    /// Whether this thread is inside [`fuzz`]: its panics are recorded, not printed.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    /// The last panic recorded on this thread.
    static CAPTURED: RefCell<Option<Panic>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Marks the current thread as fuzzing for as long as it lives.
struct CaptureGuard;

impl CaptureGuard {
    fn start() -> Self {
        // One hook for the whole process, installed once: tests fuzz on several threads at
        // once, and hooks swapped and restored per run would race each other and could leave
        // the silent one behind. Threads that are not fuzzing get the previous hook's output.
        HOOK.call_once(|| {
            let previous = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                if CAPTURING.try_with(Cell::get).unwrap_or(false) {
                    let panic = Panic {
                        location: info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
                        message: payload_text(info.payload()),
                    };
                    let _ = CAPTURED.try_with(|c| *c.borrow_mut() = Some(panic));
                } else {
                    previous(info);
                }
            }));
        });
        CAPTURING.with(|c| c.set(true));
        CaptureGuard
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURING.with(|c| c.set(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Panics on inputs holding `0xbe 0xef`, two bytes no seed holds and no interesting value
    /// makes.
    fn planted_bug(data: &[u8]) {
        if data.windows(2).any(|w| w == [0xbe, 0xef]) {
            panic!("planted bug reached");
        }
    }

    const PLANTED: Target = Target { name: "planted", run: planted_bug };

    #[test]
    fn a_planted_bug_is_found_and_shrunk_to_its_trigger() {
        let corpus = vec![b"hello".to_vec(), b"\x10\x0c\x00\x04MQTT".to_vec()];
        let failure = fuzz(&PLANTED, &corpus, Duration::from_secs(20), 42).expect_err("the planted bug is found");
        assert_eq!(failure.target, "planted");
        assert_eq!(failure.input, [0xbe, 0xef]);
        assert!(failure.message.contains("planted bug reached"), "{}", failure.message);
        assert!(failure.message.contains("engine.rs"), "the message gives the location: {}", failure.message);
    }

    #[test]
    fn a_failing_corpus_entry_is_reported_before_any_mutation() {
        let corpus = vec![b"ok".to_vec(), b"\xbe\xef!".to_vec()];
        let failure = fuzz(&PLANTED, &corpus, Duration::from_secs(10), 1).expect_err("the corpus entry fails");
        assert_eq!(failure.input, [0xbe, 0xef]);
    }

    #[test]
    fn a_sound_target_runs_for_its_budget() {
        fn sound(_: &[u8]) {}
        let target = Target { name: "sound", run: sound };
        let stats = fuzz(&target, &[b"a".to_vec()], Duration::from_millis(200), 5).expect("no failure");
        assert_eq!(stats.corpus, 1);
        assert!(stats.runs > 100);
        assert!(stats.elapsed >= Duration::from_millis(200));
        assert!(stats.working_set > 1 && stats.working_set <= MAX_WORKING_SET);
    }
}
