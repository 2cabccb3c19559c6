//! Byte-level mutation: 1 to 6 stacked edits of a corpus entry.

use crate::{Corpus, Rng};

/// Values that tend to sit on boundaries.
const INTERESTING: &[&[u8]] = &[
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"0",
    b"-1",
    b"9999999999999999999999",
    b"18446744073709551615",
    b"4294967296",
    b"77777777777",
    b"\xc3\x28",
    b"\xf0\x9f\x92\xa9",
    b"/",
    b"..",
    b"../",
    b"\\",
    b"%",
    b" ",
    b"\n",
];

/// Mutates `base` (an empty base grows random bytes).
pub fn bytes(rng: &mut Rng, base: &[u8], dict: &[&[u8]], corpus: &Corpus) -> Vec<u8> {
    let mut d = base.to_vec();
    let n = 1 + rng.usize(..6);
    for _ in 0..n {
        edit(rng, &mut d, dict, corpus);
    }
    d
}

fn pos(rng: &mut Rng, d: &[u8]) -> usize {
    rng.usize(..=d.len())
}

fn edit(rng: &mut Rng, d: &mut Vec<u8>, dict: &[&[u8]], corpus: &Corpus) {
    if d.is_empty() {
        let len = rng.usize(1..16);
        d.extend((0..len).map(|_| rng.u8(..)));
        return;
    }
    match rng.u8(..12) {
        // Flip a bit.
        0 => {
            let i = rng.usize(..d.len());
            d[i] ^= 1 << rng.u8(..8);
        }
        // Set a random byte.
        1 => {
            let i = rng.usize(..d.len());
            d[i] = rng.u8(..);
        }
        // Insert random bytes.
        2 => {
            let at = pos(rng, d);
            let len = rng.usize(1..8);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            d.splice(at..at, bytes);
        }
        // Delete a range.
        3 => {
            let a = rng.usize(..d.len());
            let b = (a + 1 + rng.usize(..16)).min(d.len());
            d.drain(a..b);
        }
        // Duplicate a range.
        4 => {
            let a = rng.usize(..d.len());
            let b = (a + 1 + rng.usize(..64)).min(d.len());
            let piece = d[a..b].to_vec();
            let at = pos(rng, d);
            d.splice(at..at, piece);
        }
        // Overwrite with an interesting value.
        5 | 6 => {
            let v = INTERESTING[rng.usize(..INTERESTING.len())];
            let at = rng.usize(..d.len());
            let end = (at + v.len()).min(d.len());
            d.splice(at..end, v.iter().copied());
        }
        // Insert a dictionary token.
        7 | 8 if !dict.is_empty() => {
            let v = dict[rng.usize(..dict.len())];
            let at = pos(rng, d);
            d.splice(at..at, v.iter().copied());
        }
        // Splice with another corpus entry.
        9 if !corpus.inputs.is_empty() => {
            let other = corpus.pick(rng);
            if !other.is_empty() {
                let a = rng.usize(..d.len());
                let b = rng.usize(..other.len());
                d.truncate(a);
                d.extend_from_slice(&other[b..]);
            }
        }
        // Truncate.
        10 => {
            let at = rng.usize(..d.len());
            d.truncate(at);
        }
        // Change an ASCII digit run (sizes, counts, modes in text formats).
        _ => {
            let i = rng.usize(..d.len());
            if let Some(start) = (i..d.len()).find(|&j| d[j].is_ascii_digit()) {
                let end = (start..d.len())
                    .find(|&j| !d[j].is_ascii_digit())
                    .unwrap_or(d.len());
                let v = INTERESTING[6 + rng.usize(..6)];
                d.splice(start..end, v.iter().copied());
            } else {
                let i = rng.usize(..d.len());
                d[i] = rng.u8(..);
            }
        }
    }
}
