//! Tags and purges. An entry carries the tags it was stored with: its route's and those its
//! response names in the tag header (`Surrogate-Key` by default, removed before the response
//! reaches a client). Purging a tag writes one marker, the time of the purge; an entry of that tag
//! stored before it is then stale (soft purge: revalidated, or served within its stale window) or
//! gone (hard purge). Markers are read with the entry, so a purge costs the same whether ten or a
//! million entries carry the tag, and, kept in the backend, it reaches every instance sharing it.

use http::{HeaderMap, HeaderName};

/// Most tags one entry keeps; more are ignored (the entry stays purgeable by the others).
pub(crate) const MAX_TAGS: usize = 64;
/// Longest tag, in bytes.
pub(crate) const MAX_TAG_LEN: usize = 256;

/// How a purge treats the entries it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurgeKind {
    /// The entries become stale: revalidated, or served stale where the route or response allows.
    Soft,
    /// The entries are gone: the next request runs the handler or asks the origin.
    Hard,
}

impl PurgeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PurgeKind::Soft => "soft",
            PurgeKind::Hard => "hard",
        }
    }
}

/// Whether `tag` can be a tag: visible ASCII without separators, at most 256 bytes (`MAX_TAG_LEN`).
pub fn is_valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// The words of one tag field line: tags are separated by spaces, tabs or commas.
pub(crate) fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split([' ', '\t', ',']).filter(|word| !word.is_empty())
}

/// Removes every `header` line from `headers` and returns the tags they named (separated by
/// spaces or commas); invalid ones are dropped.
pub(crate) fn take_tags(headers: &mut HeaderMap, header: &HeaderName) -> Vec<String> {
    let mut tags = Vec::new();
    if let http::header::Entry::Occupied(lines) = headers.entry(header) {
        let (_, values) = lines.remove_entry_mult();
        for value in values {
            let Ok(text) = value.to_str() else { continue };
            tags.extend(words(text).filter(|t| is_valid_tag(t)).map(str::to_owned));
        }
    }
    tags
}

/// The tags an entry is stored with: `route`'s and the response's, sorted, without duplicates, at
/// most [`MAX_TAGS`].
pub(crate) fn entry_tags(route: &[String], response: Vec<String>) -> Vec<String> {
    let mut tags = response;
    tags.extend(route.iter().cloned());
    tags.sort();
    tags.dedup();
    if tags.len() > MAX_TAGS {
        tracing::debug!(
            count = tags.len(),
            "more tags than an entry keeps; the rest are ignored"
        );
        tags.truncate(MAX_TAGS);
    }
    tags
}

/// Where the marker of `kind` for `tag` is kept. The braces put every marker of a namespace in
/// one Redis Cluster slot, so that one request reads all of an entry's markers.
pub(crate) fn marker_key(namespace: &str, kind: PurgeKind, tag: &str) -> String {
    format!("{{{namespace}:purge}}:{}:{tag}", kind.as_str())
}

/// A marker's value: the purge time, milliseconds since the Unix epoch, big-endian.
pub(crate) fn encode_marker(purged_at_ms: u64) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&purged_at_ms.to_be_bytes())
}

pub(crate) fn decode_marker(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

/// What the purges say about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Valid,
    Stale,
    Gone,
}

/// The verdict for an entry stored at `stored_at_ms`, given the purge times of its tags. A purge
/// in the same millisecond as the store counts: the entry may hold what the purge was for.
pub(crate) fn verdict(
    stored_at_ms: u64,
    markers: impl IntoIterator<Item = (PurgeKind, u64)>,
) -> Verdict {
    let mut verdict = Verdict::Valid;
    for (kind, purged_at_ms) in markers {
        if purged_at_ms < stored_at_ms {
            continue;
        }
        match kind {
            PurgeKind::Hard => return Verdict::Gone,
            PurgeKind::Soft => verdict = Verdict::Stale,
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn tags_come_from_every_header_line_and_the_header_is_gone() {
        let name = HeaderName::from_static("surrogate-key");
        let mut headers = HeaderMap::new();
        headers.append(&name, HeaderValue::from_static("product:7  catalog,home"));
        headers.append(&name, HeaderValue::from_static("catalog"));
        headers.insert("content-type", HeaderValue::from_static("text/html"));
        let tags = take_tags(&mut headers, &name);
        assert_eq!(tags, ["product:7", "catalog", "home", "catalog"]);
        assert!(!headers.contains_key(&name));
        assert!(headers.contains_key("content-type"));
        let merged = entry_tags(&["catalog".into(), "route".into()], tags);
        assert_eq!(merged, ["catalog", "home", "product:7", "route"]);
    }

    #[test]
    fn invalid_and_excess_tags_are_dropped() {
        assert!(!is_valid_tag("") && !is_valid_tag("a b") && !is_valid_tag("é"));
        assert!(!is_valid_tag(&"x".repeat(MAX_TAG_LEN + 1)));
        let many: Vec<String> = (0..MAX_TAGS + 10).map(|i| format!("t{i:03}")).collect();
        assert_eq!(entry_tags(&[], many).len(), MAX_TAGS);
    }

    #[test]
    fn a_purge_reaches_entries_stored_before_it_only() {
        let stored = 1_000;
        assert_eq!(verdict(stored, []), Verdict::Valid);
        assert_eq!(verdict(stored, [(PurgeKind::Hard, 999)]), Verdict::Valid);
        assert_eq!(verdict(stored, [(PurgeKind::Soft, 1_000)]), Verdict::Stale);
        let both = [(PurgeKind::Soft, 2_000), (PurgeKind::Hard, 1_500)];
        assert_eq!(verdict(stored, both), Verdict::Gone);
    }

    #[test]
    fn markers_of_a_namespace_share_one_cluster_slot_and_round_trip() {
        let key = marker_key("cache", PurgeKind::Hard, "product:7");
        assert_eq!(key, "{cache:purge}:hard:product:7");
        assert_eq!(decode_marker(&encode_marker(42)), Some(42));
        assert_eq!(decode_marker(b"junk"), None);
    }
}
