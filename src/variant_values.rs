//! How the request values of a varying field select a variant: equivalent values share one.
//!
//! Every field: its lines form one list (RFC 9110 §5.3); spaces around members and empty members
//! mean nothing. `Accept-Encoding` and `Accept-Language` are read further, as their grammar allows:
//!
//! - coding names and language tags are compared without case (RFC 9110 §8.4.1, RFC 4647 §2);
//! - a weight is a number: `q=1`, `q=1.0` and no weight are one, `q=0.50` is `q=0.5`;
//! - members are ordered by weight, heaviest first, keeping the client's order among equal
//!   weights (a server may break ties by that order, so it is never changed);
//! - a member repeated exactly is counted once;
//! - a field present with no members stays apart from an absent one (an empty `Accept-Encoding`
//!   refuses every coding; an absent one accepts any).
//!
//! A member these rules cannot read (another parameter, a malformed weight) is kept as sent, so
//! such a value only ever matches itself. What reaches the application is never rewritten: these
//! rules only decide which stored variant answers.

use std::borrow::Cow;
use std::collections::HashSet;

/// The members of `name`'s value, from `lines`, as they select a variant.
pub(crate) fn variant_members<'a>(
    name: &str,
    lines: impl Iterator<Item = &'a [u8]>,
) -> Vec<Cow<'a, [u8]>> {
    let members: Vec<&[u8]> = lines
        .flat_map(|line| line.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    if name != "accept-encoding" && name != "accept-language" {
        // Every member, empty ones included: the key of other fields is as it always was.
        return members.into_iter().map(Cow::Borrowed).collect();
    }
    if members.iter().all(|member| member.is_empty()) {
        // Present but empty is not absent: an empty `Accept-Encoding` refuses every coding.
        return members
            .first()
            .map(|_| Cow::Borrowed(&b""[..]))
            .into_iter()
            .collect();
    }
    let mut weighted: Vec<(u16, Cow<'a, [u8]>)> = members
        .into_iter()
        .filter(|member| !member.is_empty())
        .map(weighted_member)
        .collect();
    // Stable: equal weights keep the client's order.
    weighted.sort_by_key(|(weight, _)| std::cmp::Reverse(*weight));
    // A set, not a scan of what was kept: a hostile field may hold tens of thousands of members.
    let mut seen = HashSet::with_capacity(weighted.len());
    weighted
        .into_iter()
        .map(|(_, member)| member)
        .filter(|member| seen.insert(member.clone()))
        .collect()
}

/// A member's weight in thousandths and its canonical form (`gzip`, `fr-ch;q=0.9`); one that
/// cannot be read is kept as sent, weighted 1.
fn weighted_member(member: &[u8]) -> (u16, Cow<'_, [u8]>) {
    let mut parts = member.split(|&b| b == b';').map(<[u8]>::trim_ascii);
    let token = parts.next().unwrap_or_default();
    let weight = match (parts.next(), parts.next()) {
        (None, _) => Some(1000),
        (Some(param), None) => weight_param(param),
        _ => None,
    };
    let readable = !token.is_empty() && token.iter().all(|&b| is_token_char(b));
    let (Some(weight), true) = (weight, readable) else {
        return (1000, Cow::Borrowed(member));
    };
    let mut canonical = token.to_ascii_lowercase();
    if weight < 1000 {
        canonical.extend_from_slice(b";q=");
        canonical.extend_from_slice(format_weight(weight).as_bytes());
    }
    (weight, Cow::Owned(canonical))
}

/// `q=<qvalue>` (RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`) in thousandths.
fn weight_param(param: &[u8]) -> Option<u16> {
    let (name, value) = param.split_at_checked(param.iter().position(|&b| b == b'=')?)?;
    if !name.trim_ascii().eq_ignore_ascii_case(b"q") {
        return None;
    }
    let value = value[1..].trim_ascii();
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, digit) in fraction.iter().enumerate() {
        thousandths += u16::from(digit - b'0') * [100, 10, 1][i];
    }
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// `0.5` for 500, `0.125` for 125, `0` for 0.
fn format_weight(thousandths: u16) -> String {
    if thousandths == 0 {
        return "0".to_owned();
    }
    let digits = format!("{thousandths:03}");
    format!("0.{}", digits.trim_end_matches('0'))
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(name: &str, lines: &[&str]) -> Vec<String> {
        variant_members(name, lines.iter().map(|l| l.as_bytes()))
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect()
    }

    #[test]
    fn equivalent_accept_encodings_share_a_variant() {
        let canonical = members("accept-encoding", &["gzip, br;q=0.5"]);
        assert_eq!(canonical, ["gzip", "br;q=0.5"]);
        for same in [
            &[" GZIP ,BR ; q=0.50"][..],
            &["br;q=0.500, gzip;q=1"],
            &["gzip;q=1.000", "br;Q=0.5"],
            &["gzip,, br;q=0.5, gzip"],
        ] {
            assert_eq!(members("accept-encoding", same), canonical, "{same:?}");
        }
    }

    #[test]
    fn values_that_may_be_answered_differently_stay_apart() {
        let of = |v: &str| members("accept-encoding", &[v]);
        assert_ne!(of("gzip"), of("gzip;q=0"), "q=0 refuses a coding");
        assert_ne!(
            of("gzip, br"),
            of("br, gzip"),
            "a server may break ties by order"
        );
        assert_ne!(of("gzip;q=0.5"), of("gzip;q=0.6"));
        assert_eq!(of("identity;q=0"), ["identity;q=0"]);
        let lang = |v: &str| members("accept-language", &[v]);
        assert_eq!(
            lang("fr-CH, fr;q=0.9, en;q=0.8"),
            lang("FR-ch,fr;q=0.900,EN;q=0.80")
        );
        assert_eq!(lang("en;q=0.8, fr"), ["fr", "en;q=0.8"]);
        assert_ne!(lang("fr, en"), lang("en, fr"));
    }

    #[test]
    fn what_the_rules_cannot_read_matches_only_itself() {
        let of = |v: &str| members("accept-encoding", &[v]);
        assert_eq!(of("gzip;q=2"), ["gzip;q=2"]);
        assert_eq!(of("gzip;q=0.5;x=1"), ["gzip;q=0.5;x=1"]);
        assert_eq!(of("gz\u{e9}p"), ["gz\u{e9}p"]);
        assert_ne!(of("GZIP;q=0.5;x=1"), of("gzip;q=0.5;x=1"));
        // Other fields: members as sent, only trimmed.
        assert_eq!(
            members("accept", &["Text/HTML , a/b"]),
            ["Text/HTML", "a/b"]
        );
        assert_eq!(members("x-custom", &["a,,b"]), ["a", "", "b"]);
        // Present and empty differs from absent.
        assert_eq!(members("accept-encoding", &[""]), [""]);
        assert_eq!(members("accept-encoding", &[" , "]), [""]);
        assert!(members("accept-encoding", &[]).is_empty());
    }
}
