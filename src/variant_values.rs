//! How the request values of a varying field select a variant: equivalent values share one.
//!
//! The rule is that two requests share a variant only if the origin cannot answer them
//! differently, even one that reads the field the simple way. So:
//!
//! - every line is kept apart, in the order sent: two lines are not the one line they would make
//!   joined (an origin may read only the first, as Go's `Header.Get`, Starlette's `headers.get`
//!   and `HeaderMap::get` do, and a field that is not a list, such as `User-Agent`, may not be
//!   sent twice at all);
//! - a line of any field but `Accept-Encoding` is compared byte for byte: the cache does not know
//!   whether an unknown field is a list, and `(KHTML, like Gecko)` is not `(KHTML,like Gecko)` to
//!   an origin that reads a `User-Agent`. `Accept-Language` too: an origin that picks a language
//!   the simple way (the first tag it has, in the order and spelling sent, `split(',')` with no
//!   trimming) answers `en;q=0.8, fr` in English and `fr, en;q=0.8` in French, `FR-fr` and `fr-FR`
//!   or `de, fr` and `de,fr` differently, and one client's spelling would choose the language of
//!   every other client of that variant. Browsers send one spelling each, so nothing is lost.
//!
//! `Accept-Encoding` lines are read by their grammar, since whatever an origin makes of
//! equivalent values, it answers with a coding the client accepts:
//!
//! - spaces around members and empty members mean nothing;
//! - coding names are compared without case (RFC 9110 §8.4.1);
//! - a weight is a number: `q=1`, `q=1.0` and no weight are one, `q=0.50` is `q=0.5`;
//! - members are ordered by weight, heaviest first, keeping the client's order among equal
//!   weights (a server may break ties by that order);
//! - a member repeated exactly is counted once;
//! - a line that holds a member these rules cannot read (another parameter, a malformed weight),
//!   or one coding twice with different weights (RFC 9110 does not say which one counts), is kept
//!   as sent, so it only ever matches itself;
//! - a field present with no members stays apart from an absent one (an empty `Accept-Encoding`
//!   refuses every coding; an absent one accepts any).
//!
//! What reaches the application is never rewritten: these rules only decide which stored variant
//! answers.

use std::borrow::Cow;
use std::collections::HashSet;

/// How `name`'s lines select a variant: for each line, in the order sent, its members as they
/// select (see the module's rules). A line kept as sent is one member holding the whole line.
pub(crate) fn variant_lines<'a>(
    name: &str,
    lines: impl Iterator<Item = &'a [u8]>,
) -> Vec<Vec<Cow<'a, [u8]>>> {
    let encoding = name == "accept-encoding";
    lines
        .map(|line| {
            if encoding {
                encoding_members(line)
            } else {
                vec![Cow::Borrowed(line)]
            }
        })
        .collect()
}

/// One `Accept-Encoding` line's members in canonical order, or the line as sent when it cannot be
/// read whole.
fn encoding_members(line: &[u8]) -> Vec<Cow<'_, [u8]>> {
    let as_sent = || vec![Cow::Borrowed(line)];
    let mut weighted = Vec::new();
    for member in line.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if member.is_empty() {
            continue;
        }
        match weighted_member(member) {
            Some(read) => weighted.push(read),
            None => return as_sent(),
        }
    }
    // Stable: equal weights keep the client's order.
    weighted.sort_by_key(|(weight, _)| std::cmp::Reverse(*weight));
    // Sets, not scans of what was kept: a hostile line may hold tens of thousands of members.
    let mut seen = HashSet::with_capacity(weighted.len());
    let mut codings = HashSet::with_capacity(weighted.len());
    let mut members = Vec::with_capacity(weighted.len());
    for (_, member) in weighted {
        if seen.insert(member.clone()) {
            let coding = member.split(|&b| b == b';').next().unwrap_or_default();
            if !codings.insert(coding.to_vec()) {
                // One coding, two weights: origins differ on which one counts.
                return as_sent();
            }
            members.push(Cow::Owned(member));
        }
    }
    members
}

/// A member's weight in thousandths and its canonical form (`br;q=0.5`), or `None` if these rules
/// cannot read it.
fn weighted_member(member: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut parts = member.split(|&b| b == b';').map(<[u8]>::trim_ascii);
    let token = parts.next().unwrap_or_default();
    let weight = match (parts.next(), parts.next()) {
        (None, _) => 1000,
        (Some(param), None) => weight_param(param)?,
        _ => return None,
    };
    if token.is_empty() || !token.iter().all(|&b| is_token_char(b)) {
        return None;
    }
    let mut canonical = token.to_ascii_lowercase();
    if weight < 1000 {
        canonical.extend_from_slice(b";q=");
        canonical.extend_from_slice(format_weight(weight).as_bytes());
    }
    Some((weight, canonical))
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

    fn lines(name: &str, lines: &[&str]) -> Vec<Vec<String>> {
        variant_lines(name, lines.iter().map(|l| l.as_bytes()))
            .iter()
            .map(|line| {
                line.iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect()
            })
            .collect()
    }

    fn members(name: &str, line: &str) -> Vec<String> {
        lines(name, &[line]).remove(0)
    }

    #[test]
    fn equivalent_accept_encodings_share_a_variant() {
        let canonical = members("accept-encoding", "gzip, br;q=0.5");
        assert_eq!(canonical, ["gzip", "br;q=0.5"]);
        for same in [
            " GZIP ,BR ; q=0.50",
            "br;q=0.500, gzip;q=1",
            "gzip;q=1.000, br;Q=0.5",
            "gzip,, br;q=0.5, gzip",
        ] {
            assert_eq!(members("accept-encoding", same), canonical, "{same:?}");
        }
    }

    #[test]
    fn values_that_may_be_answered_differently_stay_apart() {
        let of = |v: &str| members("accept-encoding", v);
        assert_ne!(of("gzip"), of("gzip;q=0"), "q=0 refuses a coding");
        assert_ne!(
            of("gzip, br"),
            of("br, gzip"),
            "a server may break ties by order"
        );
        assert_ne!(of("gzip;q=0.5"), of("gzip;q=0.6"));
        assert_eq!(of("identity;q=0"), ["identity;q=0"]);
    }

    #[test]
    fn a_language_list_is_compared_byte_for_byte() {
        // An origin may take the first tag it has, in the order and spelling sent.
        let lang = |v: &str| members("accept-language", v);
        assert_eq!(lang("en;q=0.8, fr"), ["en;q=0.8, fr"]);
        assert_ne!(lang("en;q=0.8, fr"), lang("fr, en;q=0.8"));
        assert_ne!(lang("FR-fr"), lang("fr-FR"));
        assert_ne!(lang("de, fr"), lang("de,fr"));
        assert_ne!(lang("fr;q=0.9"), lang("fr;q=0.90"));
    }

    #[test]
    fn one_name_with_two_weights_is_kept_as_sent() {
        // Which one counts is the origin's choice: the first, the last or the heavier.
        let of = |v: &str| members("accept-encoding", v);
        assert_ne!(of("gzip;q=0, gzip"), of("gzip, gzip;q=0"));
        assert_eq!(of("gzip;q=0, gzip"), ["gzip;q=0, gzip"]);
        assert_eq!(of("GZIP, br, gzip;q=0.5"), ["GZIP, br, gzip;q=0.5"]);
        // An exact repeat is one member.
        assert_eq!(of("gzip, br, GZIP"), ["gzip", "br"]);
    }

    #[test]
    fn a_line_with_a_member_the_rules_cannot_read_matches_only_itself() {
        let of = |v: &str| members("accept-encoding", v);
        assert_eq!(of("gzip;q=2"), ["gzip;q=2"]);
        assert_eq!(of("gzip;q=0.5;x=1"), ["gzip;q=0.5;x=1"]);
        assert_eq!(of("gz\u{e9}p"), ["gz\u{e9}p"]);
        assert_ne!(of("GZIP;q=0.5;x=1"), of("gzip;q=0.5;x=1"));
        // Its other members are not reordered around it: the origin may weigh it as its text says.
        assert_ne!(
            of("gzip;q=0.5;x=1, br;q=0.5"),
            of("br;q=0.5, gzip;q=0.5;x=1")
        );
    }

    #[test]
    fn lines_are_never_joined() {
        let field = |name: &str, sent: &[&str]| lines(name, sent);
        assert_ne!(
            field("accept-language", &["de-AT", "de;q=0.9"]),
            field("accept-language", &["de-AT, de;q=0.9"]),
            "an origin may read the first line only"
        );
        assert_eq!(
            field("accept-encoding", &["GZIP", "br"]),
            [vec!["gzip"], vec!["br"]]
        );
        // Present and empty differs from absent.
        assert_eq!(field("accept-encoding", &[""]), [Vec::<String>::new()]);
        assert_eq!(field("accept-encoding", &[" , "]), [Vec::<String>::new()]);
        assert!(field("accept-encoding", &[]).is_empty());
    }

    #[test]
    fn other_fields_are_compared_byte_for_byte() {
        let field = |sent: &[&str]| lines("user-agent", sent);
        assert_eq!(
            field(&["Browser/1.0 (KHTML, like Gecko)"]),
            [vec!["Browser/1.0 (KHTML, like Gecko)"]]
        );
        assert_ne!(
            field(&["Browser/1.0 (KHTML, like Gecko)"]),
            field(&["Browser/1.0 (KHTML,like Gecko)"])
        );
        assert_ne!(
            field(&["Browser/1.0 (KHTML, like Gecko)"]),
            field(&["Browser/1.0 (KHTML", "like Gecko)"])
        );
        assert_ne!(lines("x-custom", &["a,,b"]), lines("x-custom", &["a,b"]));
    }
}
