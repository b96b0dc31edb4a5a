//! Keeping secrets out of logs, errors and `Debug` output.

/// `url` with its credentials masked: `user:pass@` becomes `user:***@`, and a lone `secret@` (which
/// people do use for a password) becomes `***@`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = authority.split_at(at);
    let masked = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}{masked}{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

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
    fn an_at_sign_after_the_host_is_not_taken_for_credentials() {
        assert_eq!(
            redact_url("redis://host/0?name=a@b"),
            "redis://host/0?name=a@b"
        );
    }
}
