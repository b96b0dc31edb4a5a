//! Values larger than one Memcached item (1 MiB by default, key and overhead included), stored in
//! parts: each part under a key of its own, then a small manifest under the value's key, marked by
//! the item's flags. A read takes the manifest, then every part in one `get`, and puts them back
//! together only if each is there and carries the manifest's nonce: parts left by another write of
//! the same key, or evicted, make a miss, never a mixed or shortened value.

use bytes::{BufMut, Bytes, BytesMut};

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
        (0..self.parts).map(|n| part_key(key, n)).collect()
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
        let mut value = BytesMut::with_capacity(self.length as usize);
        for part in parts {
            let part = (*part)?;
            let (nonce, data) = part.split_at_checked(NONCE_LEN)?;
            if nonce != self.nonce.to_be_bytes() {
                return None;
            }
            value.put_slice(data);
        }
        (value.len() as u64 == self.length).then(|| value.freeze())
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
    fn part_keys_stay_within_memcached_limits() {
        let long = "k".repeat(250);
        let manifest = Manifest::for_length(3 * PART_SIZE);
        for key in manifest.part_keys(&long) {
            assert!(key.len() <= 250 && !key.contains(' '), "{key}");
        }
    }
}
