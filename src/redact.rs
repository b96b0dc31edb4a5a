//! Keeping secrets out of logs, errors and `Debug` output.

/// `url` with its credentials masked: `user:pass@` becomes `user:***@`, and a lone `secret@` (which
/// people do use for a password) becomes `***@`.
///
/// A password may hold any character, `/`, `?`, `#` and `@` included, so the credentials are
/// everything up to the last `@` after the scheme. When in doubt, more is masked, never less.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = split_scheme(url);
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = rest.split_at(at);
    let masked = match userinfo.split_once(':') {
        Some((user, _)) if !user.contains(['/', '?', '#']) => format!("{user}:***"),
        _ => "***".to_owned(),
    };
    format!("{scheme}{masked}{host}")
}

/// `text` (an error message, say) with `url`, and every form of its password, masked: a library's
/// message may quote the password alone, decoded or not.
#[cfg(any(feature = "redis", feature = "memcached", test))]
pub fn scrub(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &redact_url(url));
    for secret in secrets(url) {
        if !secret.is_empty() {
            text = text.replace(&secret, "***");
        }
    }
    text
}

/// The credentials in `url` as written, and percent-decoded.
#[cfg(any(feature = "redis", feature = "memcached", test))]
fn secrets(url: &str) -> Vec<String> {
    let (_, rest) = split_scheme(url);
    let Some(at) = rest.rfind('@') else {
        return Vec::new();
    };
    let userinfo = &rest[..at];
    let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    let mut found = vec![userinfo.to_owned(), password.to_owned()];
    let decoded = percent_encoding::percent_decode_str(password)
        .decode_utf8_lossy()
        .into_owned();
    found.push(decoded);
    // Longest first, so that a password inside the user-info is not half-replaced.
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found
}

fn split_scheme(url: &str) -> (&str, &str) {
    match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_url, scrub};

    #[test]
    fn passwords_in_urls_are_replaced() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379"),
            "redis://:***@host:6379"
        );
        assert_eq!(
            redact_url("rediss://user:p%40ss@host:6380/2?x=1"),
            "rediss://user:***@host:6380/2?x=1"
        );
        assert_eq!(redact_url("redis://s3cret@host"), "redis://***@host");
        assert_eq!(redact_url(":pw@host:1"), ":***@host:1");
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for url in [
            "redis://localhost:6379",
            "memcached://a:11211",
            "host:1",
            "redis://h/0#insecure",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn passwords_with_url_delimiters_are_masked_whole() {
        for (url, secret) in [
            ("redis://:pa#ss@host:6379", "pa#ss"),
            ("redis://:pa/ss@host:6379/0", "pa/ss"),
            ("redis://:pa?ss@host", "pa?ss"),
            ("redis://user:p@ss/x?y#z@host:1", "p@ss/x?y#z"),
            ("memcached://user:s3cr#t@cache:11211", "s3cr#t"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
            assert!(shown.contains("host") || shown.contains("cache"), "{shown}");
        }
        // An @ after the host makes the split ambiguous: more is masked, never less.
        assert_eq!(redact_url("redis://host/0?name=a@b"), "redis://***@b");
    }

    #[test]
    fn error_texts_lose_every_form_of_the_password() {
        let url = "redis://:p%40ss#1@host:6379";
        let message = format!("cannot parse {url}: password p%40ss#1 (p@ss#1) rejected");
        let scrubbed = scrub(&message, url);
        for secret in ["p%40ss#1", "p@ss#1"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
    }
}
