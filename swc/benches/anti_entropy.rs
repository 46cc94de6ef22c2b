//! Cost of the heal (the offer of missed writes and an exchange both ways) and of one periodic
//! exchange with 1,000,000 keys replicated and 1,000 of them changed during a partition, and the
//! memory a replica holds per key.
//!
//! Run with `cargo bench -p vmq-swc --bench anti_entropy`. Before divan's timings it prints the
//! objects and bytes one exchange moves (for 100,000 and 1,000,000 keys, to show they do not
//! depend on the number of keys) and the resident memory per key.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use vmq_storage::metadata::{LocalOp, MetaKey, MetaValue, MetadataBackend, Millis, NodeId};
use vmq_swc::wire::Body;
use vmq_swc::{Recovered, Replica, SwcConfig, SwcMessage};

const KEYS: u32 = 1_000_000;
const CHANGED: u32 = 1_000;

/// Two replicas in sync, `a` and `b`.
struct Pair {
    a: Replica,
    b: Replica,
    keys: u32,
    now: u64,
    round: u64,
}

/// What one exchange moved.
#[derive(Debug, Default)]
struct Moved {
    messages: u64,
    bytes: u64,
    objects: u64,
}

fn a() -> NodeId {
    NodeId::new("vmq-a@10.0.0.1")
}

fn b() -> NodeId {
    NodeId::new("vmq-b@10.0.0.2")
}

/// Persists (acknowledges) every batch and returns the messages to send.
fn drive(r: &mut Replica) -> Vec<(NodeId, SwcMessage)> {
    let mut out = Vec::new();
    loop {
        let mut progressed = false;
        while let Some(w) = r.poll_write() {
            r.handle_persisted(w.token);
            progressed = true;
        }
        while let Some(m) = r.poll_transmit() {
            out.push(m);
            progressed = true;
        }
        while r.poll_event().is_some() {}
        if !progressed {
            return out;
        }
    }
}

fn key(i: u32) -> MetaKey {
    MetaKey::new("subscriber", format!("mp/client-{i:08}").into_bytes())
}

fn value(i: u64) -> MetaValue {
    MetaValue { timestamp: i, data: format!("value-{i:016}").into_bytes() }
}

fn put(r: &mut Replica, now: u64, k: MetaKey, v: MetaValue) {
    let context = r.read(&k).context;
    r.handle_local(Millis(now), LocalOp::Put { key: k, value: v, context });
}

impl Pair {
    fn build(keys: u32) -> Pair {
        // Timers are never fired here: the exchange is started explicitly.
        let config = SwcConfig::default();
        let members = [a(), b()];
        let mut ra = Replica::new(config.clone(), a(), 1, Recovered::empty());
        let mut rb = Replica::new(config, b(), 2, Recovered::empty());
        ra.handle_membership(Millis(0), &members);
        rb.handle_membership(Millis(0), &members);
        drive(&mut ra);
        drive(&mut rb);
        for i in 0..keys {
            put(&mut ra, 1, key(i), value(u64::from(i)));
            for (_, msg) in drive(&mut ra) {
                rb.handle_message(Millis(1), &a(), msg);
            }
            drive(&mut rb);
        }
        Pair { a: ra, b: rb, keys, now: 2, round: 0 }
    }

    /// `a` and `b` are cut apart while `a` changes `CHANGED` existing keys.
    fn partition_and_change(&mut self) {
        self.round += 1;
        self.now += 1;
        let now = Millis(self.now);
        self.a.handle_reachability(now, &b(), false);
        self.b.handle_reachability(now, &a(), false);
        drive(&mut self.a);
        drive(&mut self.b);
        for i in 0..CHANGED {
            let k = (i * 997 + u32::try_from(self.round).unwrap_or(0) * 7919) % self.keys;
            put(&mut self.a, self.now, key(k), value(self.round << 32 | u64::from(i)));
            drive(&mut self.a);
        }
    }

    /// The heal, as the node drives it: both sides learn that the other is reachable again,
    /// `a` offers what it wrote meanwhile, and both exchange in every group; messages go
    /// through postcard both ways until none is left.
    fn heal(&mut self) -> Moved {
        self.now += 1;
        let now = Millis(self.now);
        self.a.handle_reachability(now, &b(), true);
        let to_b = drive(&mut self.a);
        self.b.handle_reachability(now, &a(), true);
        let to_a = drive(&mut self.b);
        self.pump(now, to_a, to_b)
    }

    /// `b` pulls from `a` in every group (the periodic exchange, without an offer first).
    fn exchange(&mut self) -> Moved {
        self.now += 1;
        let now = Millis(self.now);
        self.b.sync_with(now, &a());
        let to_a = drive(&mut self.b);
        self.pump(now, to_a, Vec::new())
    }

    /// Carries messages both ways until neither side sends any.
    fn pump(&mut self, now: Millis, mut to_a: Vec<(NodeId, SwcMessage)>, mut to_b: Vec<(NodeId, SwcMessage)>) -> Moved {
        let mut moved = Moved::default();
        while !to_a.is_empty() || !to_b.is_empty() {
            for (_, msg) in to_b.drain(..) {
                let msg = carry(&msg, &mut moved);
                self.b.handle_message(now, &a(), msg);
                to_a.extend(drive(&mut self.b));
            }
            for (_, msg) in std::mem::take(&mut to_a) {
                let msg = carry(&msg, &mut moved);
                self.a.handle_message(now, &b(), msg);
                to_b.extend(drive(&mut self.a));
            }
        }
        moved
    }
}

fn carry(msg: &SwcMessage, moved: &mut Moved) -> SwcMessage {
    let bytes = msg.to_bytes().unwrap_or_default();
    moved.messages += 1;
    moved.bytes += bytes.len() as u64;
    let decoded = SwcMessage::from_bytes(&bytes).unwrap_or_else(|_| msg.clone());
    let SwcMessage::V1(env) = &decoded;
    if let Body::MissingReply { objects, .. } | Body::Broadcast { objects, .. } = &env.body {
        moved.objects += objects.len() as u64;
    }
    decoded
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn fixture() -> MutexGuard<'static, Pair> {
    static PAIR: OnceLock<Mutex<Pair>> = OnceLock::new();
    PAIR.get_or_init(|| Mutex::new(Pair::build(KEYS))).lock().unwrap_or_else(|e| e.into_inner())
}

fn report() {
    let small_start = Instant::now();
    let mut small = Pair::build(KEYS / 10);
    let build_small = small_start.elapsed();
    small.partition_and_change();
    let healed_small = small.heal();
    small.partition_and_change();
    let pulled_small = small.exchange();
    drop(small);

    let before = resident_bytes();
    let start = Instant::now();
    let mut pair = fixture();
    let build = start.elapsed();
    let after = resident_bytes();
    pair.partition_and_change();
    let t = Instant::now();
    let healed = pair.heal();
    let heal_time = t.elapsed();
    assert_eq!(pair.b.read(&key(0)).values, pair.a.read(&key(0)).values);
    pair.partition_and_change();
    let t = Instant::now();
    let pulled = pair.exchange();
    let apply = t.elapsed();
    let stats = pair.b.stats();
    println!("swc anti-entropy, {CHANGED} keys changed during a partition:");
    for (what, keys, m, took) in [
        ("heal (offer + exchanges both ways)", KEYS / 10, &healed_small, None),
        ("heal (offer + exchanges both ways)", KEYS, &healed, Some(heal_time)),
        ("periodic exchange (pull only)", KEYS / 10, &pulled_small, None),
        ("periodic exchange (pull only)", KEYS, &pulled, Some(apply)),
    ] {
        let took = took.map(|t| format!(" in {t:.1?}")).unwrap_or_default();
        println!("  {what}, {keys:>9} keys: {} objects, {} bytes, {} messages{took}", m.objects, m.bytes, m.messages);
    }
    println!("  (replicated {} keys in {build_small:.1?}, {KEYS} in {build:.1?})", KEYS / 10);
    println!(
        "  memory: {} bytes resident per key per replica ({} live keys on b)",
        after.saturating_sub(before) / (2 * u64::from(KEYS)),
        stats.live_keys
    );
    assert_eq!(pair.b.read(&key(0)).values, pair.a.read(&key(0)).values);
}

fn main() {
    report();
    divan::main();
}

/// One exchange after each partition in which 1,000 of the 1,000,000 keys changed (the
/// partition's writes are prepared outside the timing).
#[divan::bench(sample_count = 10, sample_size = 1)]
fn exchange_after_partition(bencher: divan::Bencher) {
    bencher.with_inputs(|| fixture().partition_and_change()).bench_values(|()| fixture().exchange());
}

/// The whole heal after each such partition: the offer and both sides' exchanges.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn heal_after_partition(bencher: divan::Bencher) {
    bencher.with_inputs(|| fixture().partition_and_change()).bench_values(|()| fixture().heal());
}
