//! Values larger than one Memcached item (1 MiB by default, key and overhead included), stored in
//! parts: each part under a key of its own, then a small manifest under the value's key, marked by
//! the item's flags. A read takes the manifest, then every part in one `get`, and puts them back
//! together only if each is there and carries the manifest's nonce: parts left by another write of
//! the same key, or evicted, make a miss, never a mixed or shortened value.

use bytes::{BufMut, Bytes, BytesMut};
use std::ops::Range;

/// The most bytes one item holds here, well under Memcached's default item size.
pub(super) const PART_SIZE: usize = 512 * 1024;
/// The largest value stored in parts.
pub(super) const MAX_VALUE: usize = 128 * 1024 * 1024;
/// The item flags that mark a manifest.
pub(super) const MANIFEST_FLAG: u32 = 0x6d70; // "mp"

/// Where the parts of one write of a value are, and how to know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Manifest {
    nonce: u64,
    parts: u32,
    length: u64,
}

const NONCE_LEN: usize = 8;
const MANIFEST_LEN: usize = 20;

impl Manifest {
    /// A new write of a value of `length` bytes.
    pub(super) fn for_length(length: usize) -> Self {
        Manifest {
            nonce: super::write_nonce(),
            parts: length.div_ceil(PART_SIZE) as u32,
            length: length as u64,
        }
    }

    /// The value's length in bytes.
    pub(super) fn length(&self) -> usize {
        self.length as usize
    }

    pub(super) fn encode(&self) -> [u8; MANIFEST_LEN] {
        let mut out = [0u8; MANIFEST_LEN];
        out[..8].copy_from_slice(&self.nonce.to_be_bytes());
        out[8..12].copy_from_slice(&self.parts.to_be_bytes());
        out[12..].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; MANIFEST_LEN] = bytes.try_into().ok()?;
        let manifest = Manifest {
            nonce: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            parts: u32::from_be_bytes(bytes[8..12].try_into().ok()?),
            length: u64::from_be_bytes(bytes[12..].try_into().ok()?),
        };
        let fits = manifest.length <= MAX_VALUE as u64
            && u64::from(manifest.parts) == manifest.length.div_ceil(PART_SIZE as u64);
        fits.then_some(manifest)
    }

    /// The keys of the parts of the value stored under `key`, in order.
    pub(super) fn part_keys(&self, key: &str) -> Vec<String> {
        self.keys_of(key, 0..self.parts)
    }

    /// The keys of parts `numbers` of the value stored under `key`, in order.
    pub(super) fn keys_of(&self, key: &str, numbers: Range<u32>) -> Vec<String> {
        numbers.map(|n| part_key(key, n)).collect()
    }

    /// The parts of `value`, each with the nonce in front.
    pub(super) fn split(&self, value: &[u8]) -> Vec<Bytes> {
        value
            .chunks(PART_SIZE)
            .map(|chunk| {
                let mut part = BytesMut::with_capacity(NONCE_LEN + chunk.len());
                part.put_u64(self.nonce);
                part.put_slice(chunk);
                part.freeze()
            })
            .collect()
    }

    /// The value, from its parts in order (`None` for a part missing or of another write).
    pub(super) fn join(&self, parts: &[Option<&[u8]>]) -> Option<Bytes> {
        if parts.len() != self.parts as usize {
            return None;
        }
        self.join_range(0, parts, 0, self.length())
    }

    /// The numbers of the parts that hold bytes `start..start + len` of the value (empty past
    /// its end).
    pub(super) fn parts_for(&self, start: usize, len: usize) -> Range<u32> {
        let end = start.saturating_add(len).min(self.length());
        if start >= end {
            return 0..0;
        }
        (start / PART_SIZE) as u32..end.div_ceil(PART_SIZE) as u32
    }

    /// Bytes `start..start + len` of the value (fewer where it ends), from `parts` in order,
    /// the first of them part number `first`; `None` for a part missing, short or of another
    /// write.
    pub(super) fn join_range(
        &self,
        first: u32,
        parts: &[Option<&[u8]>],
        start: usize,
        len: usize,
    ) -> Option<Bytes> {
        let end = start.saturating_add(len).min(self.length());
        let mut value = BytesMut::with_capacity(end.saturating_sub(start));
        for (n, part) in (first..).zip(parts) {
            let (nonce, data) = (*part)?.split_at_checked(NONCE_LEN)?;
            let begins = n as usize * PART_SIZE;
            let expected = PART_SIZE.min(self.length().checked_sub(begins)?);
            if nonce != self.nonce.to_be_bytes() || data.len() != expected {
                return None;
            }
            let from = start.saturating_sub(begins).min(data.len());
            let to = end.saturating_sub(begins).min(data.len());
            value.put_slice(&data[from..to]);
        }
        (value.len() == end.saturating_sub(start)).then(|| value.freeze())
    }
}

/// The key of part `n` of the value under `key` (hashed when it would pass Memcached's 250 bytes).
fn part_key(key: &str, n: u32) -> String {
    let plain = format!("{key}~{n}");
    if plain.len() <= 250 {
        plain
    } else {
        format!("#{}~{n}", blake3::hash(key.as_bytes()).to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(length: usize) -> Vec<u8> {
        (0..length).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_value_comes_back_whole_from_its_parts_in_order() {
        let original = value(2 * PART_SIZE + 7);
        let manifest = Manifest::for_length(original.len());
        assert_eq!(Manifest::decode(&manifest.encode()), Some(manifest));
        let parts = manifest.split(&original);
        assert_eq!(parts.len(), 3);
        let refs: Vec<Option<&[u8]>> = parts.iter().map(|p| Some(&p[..])).collect();
        assert_eq!(manifest.join(&refs).as_deref(), Some(&original[..]));
        let keys = manifest.part_keys("k");
        assert_eq!(keys, ["k~0", "k~1", "k~2"]);
    }

    #[test]
    fn a_missing_part_or_one_of_another_write_is_a_miss() {
        let original = value(PART_SIZE + 1);
        let (one, other) = (
            Manifest::for_length(original.len()),
            Manifest::for_length(original.len()),
        );
        assert_ne!(one.nonce, other.nonce);
        let (ours, theirs) = (one.split(&original), other.split(&original));
        assert_eq!(one.join(&[Some(&ours[0]), None]), None, "missing");
        assert_eq!(one.join(&[Some(&ours[0]), Some(&theirs[1])]), None, "mixed");
        assert_eq!(one.join(&[Some(&ours[0])]), None, "too few");
        assert_eq!(
            one.join(&[Some(&ours[0]), Some(&ours[1][..5])]),
            None,
            "short"
        );
        assert_eq!(Manifest::decode(b"not a manifest"), None);
        let mut lying = one.encode();
        lying[8..12].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(
            Manifest::decode(&lying),
            None,
            "parts that do not match the length"
        );
    }

    #[test]
    fn a_window_comes_from_the_parts_that_hold_it() {
        let original = value(3 * PART_SIZE + 11);
        let manifest = Manifest::for_length(original.len());
        let parts = manifest.split(&original);
        let window = |start: usize, len: usize| {
            let numbers = manifest.parts_for(start, len);
            let first = numbers.start;
            let held: Vec<Option<&[u8]>> = numbers.map(|n| Some(&parts[n as usize][..])).collect();
            manifest.join_range(first, &held, start, len)
        };
        for (start, len) in [
            (0, 10),
            (PART_SIZE - 3, 10),
            (PART_SIZE, PART_SIZE),
            (5, 3 * PART_SIZE),
            (3 * PART_SIZE + 5, 100),
        ] {
            let end = (start + len).min(original.len());
            assert_eq!(
                window(start, len).as_deref(),
                Some(&original[start..end]),
                "{start}+{len}"
            );
        }
        assert_eq!(manifest.parts_for(original.len(), 10), 0..0, "past the end");
        let short = &parts[1][..100];
        assert_eq!(
            manifest.join_range(1, &[Some(short)], PART_SIZE, 10),
            None,
            "a short part"
        );
        let other = Manifest::for_length(original.len()).split(&original);
        assert_eq!(
            manifest.join_range(1, &[Some(&other[1])], PART_SIZE, 10),
            None,
            "another write's"
        );
    }

    #[test]
    fn part_keys_stay_within_memcached_limits() {
        let long = "k".repeat(250);
        let manifest = Manifest::for_length(3 * PART_SIZE);
        for key in manifest.part_keys(&long) {
            assert!(key.len() <= 250 && !key.contains(' '), "{key}");
        }
    }
}
