//! The stored entry format: magic and version, then length-prefixed fields; the body is a zero-copy
//! slice of the stored bytes.
//!
//! Every entry carries the digest of the key material it was stored for. A lookup checks it, so an entry
//! written under our key by anything else (another namespace, a bug, a person with `redis-cli`) is a miss,
//! never somebody else's response. Anything that does not decode is a miss too.

pub use crate::apart::ApartBody;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 4] = b"CMWE";
/// Version 2 added the entry's tags; version 1 entries (no tags) are still read.
const VERSION: u8 = 2;
const VERSION_WITHOUT_TAGS: u8 = 1;
const KIND_RESPONSE: u8 = 0;
const KIND_VARIANTS: u8 = 1;
const KIND_APART: u8 = 2;
/// A response body's length field saying "the rest of the entry": what a body whose length was
/// not known when its entry began to be written has (see `fill`).
const BODY_TO_END: u32 = u32::MAX;
/// The largest body an entry holds (its length is 32 bits, one value of which says "to the end").
pub const MAX_STORED_BODY: usize = BODY_TO_END as usize - 1;

/// A decoded entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Digest of the key material the entry was stored for.
    pub fingerprint: [u8; 32],
    /// When it was stored, in milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    /// How long it is fresh from `stored_at_ms`.
    pub ttl: Duration,
    /// The tags it can be purged by (sorted, without duplicates).
    pub tags: Vec<String>,
    pub content: Content,
}

/// What an entry holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A complete response.
    Response(StoredResponse),
    /// The response varies on these request header fields (lower-case, sorted): the response itself
    /// is stored under the variant key built from them.
    Variants(Vec<String>),
    /// The response is stored apart, whole (this entry's fields, then the response), under the
    /// key [`Apart::key`] names: a large one, read with time for its length.
    Apart(Apart),
}

/// Where a response stored apart is, and how long its encoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Apart {
    /// The length of the stored encoding, in bytes.
    pub length: u64,
    /// Unique to the write: another write of the same key goes elsewhere.
    pub nonce: u64,
}

impl Apart {
    /// The key of the response stored apart from the entry at `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{key}:apart:{:016x}", self.nonce)
    }
}

/// A response as stored: status, end-to-end headers, exact body bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: StoredBody,
}

/// The body of a stored response.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredBody {
    /// All of it in memory (sharing the allocation of the bytes it was read from).
    Whole(Bytes),
    /// A large response's, stored apart: read from storage a window at a time as it is sent.
    Apart(ApartBody),
}

impl StoredBody {
    pub fn len(&self) -> usize {
        match self {
            StoredBody::Whole(bytes) => bytes.len(),
            StoredBody::Apart(body) => body.len(),
        }
    }

    /// Bytes `from..=to` (within the body: the caller checked the range), without a copy.
    pub(crate) fn part(&self, from: usize, to: usize) -> StoredBody {
        match self {
            StoredBody::Whole(bytes) => StoredBody::Whole(bytes.slice(from..=to)),
            StoredBody::Apart(body) => StoredBody::Apart(body.part(from, to)),
        }
    }

    /// The bytes, when they are all in memory.
    pub fn whole(&self) -> Option<&Bytes> {
        match self {
            StoredBody::Whole(bytes) => Some(bytes),
            StoredBody::Apart(_) => None,
        }
    }
}

impl From<Bytes> for StoredBody {
    fn from(bytes: Bytes) -> Self {
        StoredBody::Whole(bytes)
    }
}

/// Where the body of a response entry is within its encoding, as [`Entry::decode_head`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyAt {
    pub start: usize,
    pub len: usize,
}

/// Why stored bytes were not a usable entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("not a cache-middleware entry (bad magic)")]
    Magic,
    #[error("entry format version {0} is not supported")]
    Version(u8),
    #[error("entry is truncated or malformed")]
    Malformed,
}

impl Entry {
    /// Milliseconds since the Unix epoch, now.
    pub fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis)
    }

    /// Time since the entry was stored (zero if the clock went backwards).
    pub fn age(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.stored_at_ms))
    }

    /// The stored response, unless this is a variant marker or says where the response is.
    pub fn response(&self) -> Option<&StoredResponse> {
        match &self.content {
            Content::Response(response) => Some(response),
            Content::Variants(_) | Content::Apart(_) => None,
        }
    }

    /// The stored response, owned, unless this is a variant marker or says where the response is.
    pub fn into_response(self) -> Option<StoredResponse> {
        match self.content {
            Content::Response(response) => Some(response),
            Content::Variants(_) | Content::Apart(_) => None,
        }
    }

    /// Whether the entry is still within its TTL.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        self.age(now_ms) < self.ttl
    }

    /// The stored form; `None` for a response whose body is not in memory (read from storage
    /// as it is sent): that one is read whole before it is written again.
    pub fn encode(&self) -> Option<Bytes> {
        let mut out = BytesMut::with_capacity(self.encoded_len_hint());
        self.put_all_but_body(&mut out);
        if let Content::Response(response) = &self.content {
            put_field(&mut out, response.body.whole()?);
        }
        Some(out.freeze())
    }

    /// The encoding of a response entry up to its body, for a body of `body_len` bytes (or,
    /// `None`, of a length not yet known) that follows as it arrives (see `fill`). The entry's
    /// own body is ignored.
    pub(crate) fn encode_before_body(&self, body_len: Option<u32>) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.encoded_len_hint());
        self.put_all_but_body(&mut out);
        out.put_u32(body_len.unwrap_or(BODY_TO_END));
        out
    }

    fn put_all_but_body(&self, out: &mut BytesMut) {
        out.put_slice(MAGIC);
        out.put_u8(VERSION);
        out.put_slice(&self.fingerprint);
        out.put_u64(self.stored_at_ms);
        out.put_u64(self.ttl.as_millis().min(u128::from(u64::MAX)) as u64);
        out.put_u32(self.tags.len() as u32);
        for tag in &self.tags {
            put_field(out, tag.as_bytes());
        }
        match &self.content {
            Content::Response(response) => {
                out.put_u8(KIND_RESPONSE);
                out.put_u16(response.status.as_u16());
                out.put_u32(response.headers.len() as u32);
                for (name, value) in &response.headers {
                    put_field(out, name.as_str().as_bytes());
                    put_field(out, value.as_bytes());
                }
            }
            Content::Variants(names) => {
                out.put_u8(KIND_VARIANTS);
                out.put_u32(names.len() as u32);
                for name in names {
                    put_field(out, name.as_bytes());
                }
            }
            Content::Apart(apart) => {
                out.put_u8(KIND_APART);
                out.put_u64(apart.length);
                out.put_u64(apart.nonce);
            }
        }
    }

    fn encoded_len_hint(&self) -> usize {
        let content = match &self.content {
            Content::Response(r) => {
                r.body.len()
                    + r.headers
                        .iter()
                        .map(|(n, v)| n.as_str().len() + v.len() + 8)
                        .sum::<usize>()
            }
            Content::Variants(names) => names.iter().map(|n| n.len() + 4).sum(),
            Content::Apart(_) => 16,
        };
        68 + content + self.tags.iter().map(|t| t.len() + 4).sum::<usize>()
    }

    /// Decodes stored bytes; the body and header values share `bytes`' allocation.
    pub fn decode(bytes: &Bytes) -> Result<Entry, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let entry = Self::decode_from(&mut r, None)?;
        if r.remaining() != 0 {
            return Err(DecodeError::Malformed);
        }
        Ok(entry)
    }

    /// Decodes the start (`prefix`) of a response entry whose encoding is `total` bytes long, up
    /// to its body: the entry with as much of the body as `prefix` holds, and where the whole
    /// body is in the encoding (it runs to the end).
    pub(crate) fn decode_head(
        prefix: &Bytes,
        total: usize,
    ) -> Result<(Entry, BodyAt), DecodeError> {
        let mut r = Reader {
            bytes: prefix,
            at: 0,
        };
        let mut body_at = BodyAt { start: 0, len: 0 };
        let entry = Self::decode_from(&mut r, Some((total, &mut body_at)))?;
        if !matches!(entry.content, Content::Response(_)) {
            return Err(DecodeError::Malformed);
        }
        Ok((entry, body_at))
    }

    /// Decodes an entry from `r`: whole, or with `head` (the encoding's total length, and
    /// where to say the body is) only up to the body and as much of it as `r` holds.
    fn decode_from(
        r: &mut Reader<'_>,
        head: Option<(usize, &mut BodyAt)>,
    ) -> Result<Entry, DecodeError> {
        if r.take(4)? != MAGIC.as_slice() {
            return Err(DecodeError::Magic);
        }
        let version = r.u8()?;
        if version != VERSION && version != VERSION_WITHOUT_TAGS {
            return Err(DecodeError::Version(version));
        }
        let fingerprint: [u8; 32] = r.take(32)?.try_into().expect("32 bytes");
        let stored_at_ms = r.u64()?;
        let ttl = Duration::from_millis(r.u64()?);
        let tags = if version == VERSION {
            r.strings()?
        } else {
            Vec::new()
        };
        let content = match r.u8()? {
            KIND_RESPONSE => {
                let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError::Malformed)?;
                let count = r.u32()? as usize;
                // Each header takes at least 8 bytes: reject counts the input cannot hold before allocating.
                if count > r.remaining() / 8 {
                    return Err(DecodeError::Malformed);
                }
                // Room for what a replay adds (X-Cache, Age, Content-Length) without regrowing.
                let mut headers = HeaderMap::with_capacity(count + 3);
                for _ in 0..count {
                    let name =
                        HeaderName::from_bytes(r.field()?).map_err(|_| DecodeError::Malformed)?;
                    let value = HeaderValue::from_maybe_shared(r.shared_field()?)
                        .map_err(|_| DecodeError::Malformed)?;
                    headers.append(name, value);
                }
                let body = match head {
                    None => {
                        let len = r.body_len(r.bytes.len())?;
                        r.shared(len)?
                    }
                    Some((total, body_at)) => {
                        let len = r.body_len(total)?;
                        if r.at.checked_add(len) != Some(total) {
                            return Err(DecodeError::Malformed);
                        }
                        *body_at = BodyAt { start: r.at, len };
                        let held = r.remaining().min(len);
                        r.shared(held)?
                    }
                };
                Content::Response(StoredResponse {
                    status,
                    headers,
                    body: StoredBody::Whole(body),
                })
            }
            KIND_VARIANTS => Content::Variants(r.strings()?),
            KIND_APART => Content::Apart(Apart {
                length: r.u64()?,
                nonce: r.u64()?,
            }),
            _ => return Err(DecodeError::Malformed),
        };
        Ok(Entry {
            fingerprint,
            stored_at_ms,
            ttl,
            tags,
            content,
        })
    }
}

fn put_field(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

/// A bounds-checked reader: every read that would run past the end is `Malformed`, never a panic.
/// Fields are borrowed; only header values and the body become shared `Bytes` (each one an atomic
/// reference count, so the fixed fields are read without them).
struct Reader<'a> {
    bytes: &'a Bytes,
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
    fn range(&mut self, n: usize) -> Result<std::ops::Range<usize>, DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Malformed);
        }
        let range = self.at..self.at + n;
        self.at += n;
        Ok(range)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let range = self.range(n)?;
        Ok(&self.bytes[range])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn field(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    /// A count, then that many UTF-8 fields.
    fn strings(&mut self) -> Result<Vec<String>, DecodeError> {
        let count = self.u32()? as usize;
        if count > self.remaining() / 4 {
            return Err(DecodeError::Malformed);
        }
        let mut strings = Vec::with_capacity(count);
        for _ in 0..count {
            let text = std::str::from_utf8(self.field()?).map_err(|_| DecodeError::Malformed)?;
            strings.push(text.to_owned());
        }
        Ok(strings)
    }

    /// A body's length field, in an encoding `total` bytes long.
    fn body_len(&mut self, total: usize) -> Result<usize, DecodeError> {
        match self.u32()? {
            BODY_TO_END => total.checked_sub(self.at).ok_or(DecodeError::Malformed),
            len => Ok(len as usize),
        }
    }

    fn shared_field(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        self.shared(len)
    }

    fn shared(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        let range = self.range(len)?;
        Ok(self.bytes.slice(range))
    }
}

/// Whole milliseconds of `duration`, saturating instead of wrapping (RFC 9111 §1.2.2: time
/// arithmetic never overflows).
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("image/png"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Entry {
            fingerprint: [7; 32],
            stored_at_ms: 1_700_000_000_000,
            ttl: Duration::from_secs(300),
            tags: vec!["catalog".into(), "product:7".into()],
            content: Content::Response(StoredResponse {
                status: StatusCode::OK,
                headers,
                body: Bytes::from_static(b"\x89PNG\r\n\x1a\n\x00\xff").into(),
            }),
        }
    }

    #[test]
    fn responses_round_trip_with_repeated_headers_and_binary_bodies() {
        let entry = sample();
        assert_eq!(Entry::decode(&entry.encode().unwrap()).unwrap(), entry);
    }

    #[test]
    fn entries_of_the_version_without_tags_are_still_read() {
        let entry = Entry {
            tags: Vec::new(),
            ..sample()
        };
        let mut bytes = entry.encode().unwrap().to_vec();
        // Version 1: the same layout without the tag count.
        bytes[4] = VERSION_WITHOUT_TAGS;
        let count_at = 4 + 1 + 32 + 8 + 8;
        bytes.drain(count_at..count_at + 4);
        assert_eq!(Entry::decode(&Bytes::from(bytes)).unwrap(), entry);
    }

    #[test]
    fn variant_markers_round_trip() {
        let entry = Entry {
            content: Content::Variants(vec!["accept".into(), "accept-language".into()]),
            ..sample()
        };
        assert_eq!(Entry::decode(&entry.encode().unwrap()).unwrap(), entry);
    }

    #[test]
    fn entries_stored_apart_round_trip_and_name_their_own_key() {
        let apart = Apart {
            length: 3 << 20,
            nonce: 0xfeed,
        };
        let entry = Entry {
            content: Content::Apart(apart),
            ..sample()
        };
        let encoded = entry.encode().unwrap();
        assert_eq!(Entry::decode(&encoded).unwrap(), entry);
        for len in 0..encoded.len() {
            assert!(
                Entry::decode(&encoded.slice(..len)).is_err(),
                "prefix {len}"
            );
        }
        assert_eq!(apart.key("ns:k"), "ns:k:apart:000000000000feed");
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let bytes = sample().encode().unwrap();
        for len in 0..bytes.len() {
            assert!(Entry::decode(&bytes.slice(..len)).is_err(), "prefix {len}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(Entry::decode(&Bytes::from(longer)).is_err());
        assert_eq!(
            Entry::decode(&Bytes::from_static(b"{\"json\":true}")),
            Err(DecodeError::Magic)
        );
        let mut future = bytes.to_vec();
        future[4] = 9;
        assert_eq!(
            Entry::decode(&Bytes::from(future)),
            Err(DecodeError::Version(9))
        );
    }

    #[test]
    fn absurd_header_counts_are_rejected_before_allocating() {
        let mut bytes = sample().encode().unwrap().to_vec();
        let tags_len: usize = sample().tags.iter().map(|t| 4 + t.len()).sum();
        let count_at = 4 + 1 + 32 + 8 + 8 + 4 + tags_len + 1 + 2;
        bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Entry::decode(&Bytes::from(bytes)),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn the_head_of_an_encoding_says_where_its_body_is_and_holds_what_came_of_it() {
        let entry = sample();
        let encoded = entry.encode().unwrap();
        let body = entry.response().unwrap().body.whole().unwrap().clone();
        let total = encoded.len();
        for cut in [total - body.len(), total - 3, total] {
            let (head, at) = Entry::decode_head(&encoded.slice(..cut), total).unwrap();
            assert_eq!((at.start, at.len), (total - body.len(), body.len()));
            let held = head.response().unwrap().body.whole().unwrap().clone();
            assert_eq!(held, body.slice(..cut - at.start));
            assert_eq!(
                head.response().unwrap().headers,
                entry.response().unwrap().headers
            );
        }
        // A length that does not run to the end of the encoding, or a head cut short.
        assert_eq!(
            Entry::decode_head(&encoded, total + 1),
            Err(DecodeError::Malformed)
        );
        let short = encoded.slice(..total - body.len() - 5);
        assert_eq!(
            Entry::decode_head(&short, total),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn a_body_of_length_unknown_when_written_runs_to_the_end_of_the_entry() {
        let entry = sample();
        let body = entry.response().unwrap().body.whole().unwrap().clone();
        let mut encoded = entry.encode_before_body(None);
        encoded.extend_from_slice(&body);
        let encoded = encoded.freeze();
        assert_eq!(Entry::decode(&encoded).unwrap(), entry);
        let total = encoded.len();
        let (head, at) = Entry::decode_head(&encoded.slice(..total - 4), total).unwrap();
        assert_eq!((at.start, at.len), (total - body.len(), body.len()));
        assert_eq!(
            head.response().unwrap().headers,
            entry.response().unwrap().headers
        );
        // Written again (a 304 merged into it), it says its length.
        let again = Entry::decode(&encoded).unwrap().encode().unwrap();
        assert_eq!(Entry::decode(&again).unwrap(), entry);
        assert_eq!(again.len(), total);
        let empty = entry.encode_before_body(None).freeze();
        let decoded = Entry::decode(&empty).unwrap();
        assert!(decoded.response().unwrap().body.whole().unwrap().is_empty());
    }

    #[test]
    fn freshness_follows_the_ttl() {
        let entry = sample();
        assert!(entry.is_fresh(entry.stored_at_ms + 299_999));
        assert!(!entry.is_fresh(entry.stored_at_ms + 300_000));
        assert_eq!(entry.age(entry.stored_at_ms - 5), Duration::ZERO);
    }
}
