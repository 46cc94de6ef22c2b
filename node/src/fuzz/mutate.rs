//! The random source and the byte-level mutations of the engine: AFL's classic set (bit flips,
//! interesting values, arithmetic, block insert/delete/duplicate, splicing) plus writes of
//! length fields that match the bytes that follow, which is how most of our decoders frame
//! their fields.

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014): a seeded, reproducible stream, good enough to pick mutations.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`, or 0 when `n` is 0. The modulo bias is irrelevant here.
    pub(super) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    pub(super) fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    fn pick<T: Copy>(&mut self, values: &[T]) -> T {
        values[self.below(values.len())]
    }
}

/// Bytes that sit at the edges of signed and unsigned ranges, of MQTT's and LEB128's
/// continuation bit, and common small counts.
const INTERESTING_8: [u8; 12] = [0, 1, 2, 16, 32, 64, 100, 0x7e, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_16: [u16; 10] = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x1000, 0x7fff, 0x8000, 0xffff];
/// Including the cluster transport's 16 MiB frame limit and the values either side of it.
const INTERESTING_32: [u32; 10] =
    [0, 1, 0xffff, 0x1_0000, 0xff_ffff, 0x100_0000, 0x100_0001, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

/// Applies one random mutation to `input`, with `other` (another corpus entry) as the source
/// of spliced bytes, and keeps the result within `max_len`.
pub(super) fn mutate(input: &mut Vec<u8>, other: &[u8], rng: &mut Rng, max_len: usize) {
    match rng.below(13) {
        0 => flip_bit(input, rng),
        1 => set_interesting_byte(input, rng),
        2 => add_to_byte(input, rng),
        3 => {
            let value = rng.pick(&INTERESTING_16);
            write_at_random(input, rng, &value.to_be_bytes())
        }
        4 => {
            let value = rng.pick(&INTERESTING_32);
            write_at_random(input, rng, &value.to_be_bytes())
        }
        5 => write_length_field(input, rng),
        6 => insert_random(input, rng),
        7 => delete_range(input, rng),
        8 => duplicate_range(input, rng),
        9 => overwrite_from(input, other, rng),
        10 => crossover(input, other, rng),
        11 => input.truncate(rng.below(input.len())),
        _ => append_random(input, rng),
    }
    input.truncate(max_len);
}

/// A block length: mostly a few bytes, sometimes up to 64, never beyond `max`.
fn block_len(rng: &mut Rng, max: usize) -> usize {
    let limit = 1usize << (1 + rng.below(6));
    1 + rng.below(max.min(limit))
}

fn flip_bit(input: &mut Vec<u8>, rng: &mut Rng) {
    if input.is_empty() {
        return append_random(input, rng);
    }
    let at = rng.below(input.len());
    input[at] ^= 1 << rng.below(8);
}

fn set_interesting_byte(input: &mut Vec<u8>, rng: &mut Rng) {
    let value = rng.pick(&INTERESTING_8);
    write_at_random(input, rng, &[value]);
}

/// Increments or decrements a byte by a little: counts and lengths off by one or a few.
fn add_to_byte(input: &mut Vec<u8>, rng: &mut Rng) {
    if input.is_empty() {
        return append_random(input, rng);
    }
    let at = rng.below(input.len());
    let delta = 1 + rng.below(16) as u8;
    input[at] = if rng.one_in(2) { input[at].wrapping_add(delta) } else { input[at].wrapping_sub(delta) };
}

/// Overwrites `bytes.len()` bytes at a random offset, growing the input if it is too short.
fn write_at_random(input: &mut Vec<u8>, rng: &mut Rng, bytes: &[u8]) {
    let at = rng.below(input.len() + 1);
    let end = at + bytes.len();
    if input.len() < end {
        input.resize(end, 0);
    }
    input[at..end].copy_from_slice(bytes);
}

/// Writes a 1-, 2- or 4-byte big-endian length at a random offset whose value is the number
/// of bytes after it, or one more or one less: the boundaries a length check must get right.
fn write_length_field(input: &mut Vec<u8>, rng: &mut Rng) {
    let width = rng.pick(&[1usize, 2, 4]);
    if input.len() < width {
        return append_random(input, rng);
    }
    let at = rng.below(input.len() - width + 1);
    let after = (input.len() - at - width) as u64;
    let value = match rng.below(3) {
        0 => after,
        1 => after + 1,
        _ => after.saturating_sub(1),
    };
    let bytes = value.to_be_bytes();
    input[at..at + width].copy_from_slice(&bytes[8 - width..]);
}

fn insert_random(input: &mut Vec<u8>, rng: &mut Rng) {
    let at = rng.below(input.len() + 1);
    let len = block_len(rng, 64);
    // Half the time a run of one byte: padding, repeated lengths, long varints.
    let block: Vec<u8> = if rng.one_in(2) { vec![rng.byte(); len] } else { (0..len).map(|_| rng.byte()).collect() };
    input.splice(at..at, block);
}

fn delete_range(input: &mut Vec<u8>, rng: &mut Rng) {
    if input.is_empty() {
        return;
    }
    let len = block_len(rng, input.len());
    let at = rng.below(input.len() - len + 1);
    input.drain(at..at + len);
}

fn duplicate_range(input: &mut Vec<u8>, rng: &mut Rng) {
    if input.is_empty() {
        return append_random(input, rng);
    }
    let len = block_len(rng, input.len());
    let from = rng.below(input.len() - len + 1);
    let block = input[from..from + len].to_vec();
    let at = rng.below(input.len() + 1);
    input.splice(at..at, block);
}

/// Overwrites part of the input with a block of another entry, at a random offset.
fn overwrite_from(input: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    if other.is_empty() {
        return append_random(input, rng);
    }
    let len = block_len(rng, other.len());
    let from = rng.below(other.len() - len + 1);
    write_at_random(input, rng, &other[from..from + len]);
}

/// The head of the input followed by the tail of another entry.
fn crossover(input: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    let cut = rng.below(input.len() + 1);
    let from = rng.below(other.len() + 1);
    input.truncate(cut);
    input.extend_from_slice(&other[from..]);
}

fn append_random(input: &mut Vec<u8>, rng: &mut Rng) {
    let len = block_len(rng, 64);
    input.extend((0..len).map(|_| rng.byte()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutations() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut input = b"seed input".to_vec();
            for _ in 0..1000 {
                mutate(&mut input, b"other entry", &mut rng, 256);
            }
            input
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn mutations_never_exceed_the_limit_and_handle_empty_inputs() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let mut input = Vec::new();
            for _ in 0..1 + rng.below(8) {
                mutate(&mut input, &[], &mut rng, 32);
                assert!(input.len() <= 32);
            }
        }
    }

    #[test]
    fn length_fields_count_the_bytes_after_them() {
        let mut rng = Rng::new(3);
        let mut hits = 0;
        for _ in 0..1000 {
            let mut input = vec![0xaa; 10];
            write_length_field(&mut input, &mut rng);
            // A 2-byte field at offset 0 of 10 bytes says 8, 9 or 7.
            if input[0] == 0 && matches!(input[1], 7..=9) && input[2..] == [0xaa; 8] {
                hits += 1;
            }
        }
        assert!(hits > 0);
    }
}
