//! HTTP dates (RFC 9110 §5.6.7), read as robustly as the grammar allows: the three formats
//! (IMF-fixdate, RFC 850, asctime), names in any letter case, and a day-of-week that does not
//! match the date. Nothing else is accepted: a two-digit hour, a missing comma or a zone other
//! than GMT still make the date invalid (and an invalid `Expires` means already expired).

use http::HeaderValue;
use std::time::SystemTime;

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const WEEKDAYS_LONG: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// An HTTP date field, if present and well formed.
pub(crate) fn http_date(value: Option<&HeaderValue>) -> Option<SystemTime> {
    let text = value?.to_str().ok()?.trim();
    if let Ok(time) = httpdate::parse_http_date(text) {
        return Some(time);
    }
    // §5.6.7: "Recipients of timestamp values are encouraged to be robust in parsing timestamps".
    let canonical = canonical_case(text);
    let (weekday, rest) = canonical.split_at(canonical.find(|c: char| !c.is_ascii_alphabetic())?);
    let names = if weekday.len() == 3 {
        &WEEKDAYS[..]
    } else {
        &WEEKDAYS_LONG[..]
    };
    names
        .iter()
        .find_map(|name| httpdate::parse_http_date(&format!("{name}{rest}")).ok())
}

/// Every run of letters as the grammar spells it: `Thu`, `Aug`, `GMT`.
fn canonical_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.eq_ignore_ascii_case("gmt") {
            out.push_str("GMT");
        } else {
            let mut chars = run.chars();
            if let Some(first) = chars.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(chars.map(|c| c.to_ascii_lowercase()));
            }
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphabetic() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn parse(text: &str) -> Option<u64> {
        let value = HeaderValue::from_str(text).unwrap();
        http_date(Some(&value)).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs())
    }

    const AUG_18_2050: u64 = 2_544_400_878; // Thu, 18 Aug 2050 02:01:18 GMT

    #[test]
    fn the_three_formats_are_read() {
        assert_eq!(parse("Thu, 18 Aug 2050 02:01:18 GMT"), Some(AUG_18_2050));
        assert_eq!(parse("Thu Aug 18 02:01:18 2050"), Some(AUG_18_2050));
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
    }

    #[test]
    fn letter_case_and_a_wrong_weekday_are_forgiven() {
        for text in [
            "THU, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 AUG 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 gMT",
            "Mon, 18 Aug 2050 02:01:18 GMT",
            "Mon Aug 18 02:01:18 2050",
        ] {
            assert_eq!(parse(text), Some(AUG_18_2050), "{text}");
        }
        assert!(parse("Thu Aug  8 02:01:18 2050").is_some());
    }

    #[test]
    fn malformed_dates_stay_invalid() {
        for text in [
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu,  18 Aug 2050 02:01:18 GMT",
            "0",
            "",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }
}
