//! The one gate every write to the cache passes: a [`Storable`] response can only be made by the
//! storability decision, and [`Engine`](crate::engine::Engine) stores nothing else.
//!
//! First stores, refreshes, 304 merges (in the foreground and in background revalidation) and stale
//! refreshes, in both modes, all build a `Storable` from the response exactly as it will be stored,
//! so a field that arrives late (a `Set-Cookie` or `private` on a `304`) is judged like one that
//! arrived first. On top of each mode's own rules (which refuse `private` and `no-store`), one
//! invariant holds for every entry: it never carries `Set-Cookie`, unless the shared cache was told
//! to store cookies.

// Both outcomes carry the response (stored, or handed back to be served), so the sizes match.
#![allow(clippy::result_large_err)]

use crate::entry::StoredResponse;
use crate::policy::{
    classify_response, sorted_vary, CacheControl, ResponseDecision, ResponsePolicy,
};
use crate::shared::storable::{may_store, strip_named_fields, Exchanged, NotStored};
use http::header::SET_COOKIE;
use http::{HeaderMap, Method};

/// A response that passed the storability decision, in the form it is stored.
#[derive(Debug)]
pub(crate) struct Storable(StoredResponse);

/// Why a response may not be stored (a stable reason name), with the response given back.
pub(crate) type Refused = (&'static str, StoredResponse);

/// What the shared-cache decision needs to know of the request and the cache's options.
pub(crate) struct SharedRules<'a> {
    pub method: &'a Method,
    pub request_headers: &'a HeaderMap,
    pub request_cc: &'a CacheControl,
    /// The response's effective directives (a targeted field may have replaced Cache-Control).
    pub cc: &'a CacheControl,
    pub store_set_cookie: bool,
}

impl Storable {
    /// Route mode: the route chose a TTL; the response can still refuse (see
    /// [`classify_response`]).
    pub(crate) fn for_route(
        response: StoredResponse,
        method: &Method,
        policy: ResponsePolicy<'_>,
    ) -> Result<Storable, Refused> {
        if let ResponseDecision::Skip(reason) =
            classify_response(method, response.status, &response.headers, policy)
        {
            return Err((reason.as_str(), response));
        }
        Self::sealed(response, false)
    }

    /// Shared-cache mode (RFC 9111 §3): the fields `no-cache="..."` and `private="..."` name are
    /// dropped, then the response as it would be stored is judged.
    pub(crate) fn for_shared(
        mut response: StoredResponse,
        rules: &SharedRules<'_>,
    ) -> Result<Storable, Refused> {
        strip_named_fields(&mut response, rules.cc);
        let vary = sorted_vary(&response.headers);
        let decision = may_store(
            &Exchanged {
                method: rules.method,
                request_headers: rules.request_headers,
                request_cc: rules.request_cc,
                status: response.status,
                headers: &response.headers,
                cc: rules.cc,
                vary: &vary,
            },
            rules.store_set_cookie,
        );
        match decision {
            Ok(()) => Self::sealed(response, rules.store_set_cookie),
            Err(reason) => Err((reason.as_str(), response)),
        }
    }

    /// The invariant of every entry, whatever the mode's rules said.
    fn sealed(response: StoredResponse, store_set_cookie: bool) -> Result<Storable, Refused> {
        if !store_set_cookie && response.headers.contains_key(SET_COOKIE) {
            return Err((NotStored::SetCookie.as_str(), response));
        }
        Ok(Storable(response))
    }

    pub(crate) fn response(&self) -> &StoredResponse {
        &self.0
    }

    pub(crate) fn into_response(self) -> StoredResponse {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};

    fn response(fields: &[(&'static str, &'static str)]) -> StoredResponse {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(*name, HeaderValue::from_static(value));
        }
        StoredResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"x").into(),
        }
    }

    /// The shared-cache decision for a response with `fields`, to an anonymous GET.
    fn judged(
        fields: &[(&'static str, &'static str)],
        store_set_cookie: bool,
    ) -> Result<Storable, Refused> {
        let stored = response(fields);
        let cc = CacheControl::from_field_lines(&stored.headers);
        let rules = SharedRules {
            method: &Method::GET,
            request_headers: &HeaderMap::new(),
            request_cc: &CacheControl::default(),
            cc: &cc,
            store_set_cookie,
        };
        Storable::for_shared(stored, &rules)
    }

    fn shared(
        fields: &[(&'static str, &'static str)],
        store_set_cookie: bool,
    ) -> Result<(), &'static str> {
        judged(fields, store_set_cookie)
            .map(|_| ())
            .map_err(|(reason, _)| reason)
    }

    #[test]
    fn cookies_and_private_responses_never_become_shared_entries() {
        assert_eq!(
            shared(
                &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
                false
            ),
            Err("set-cookie")
        );
        assert_eq!(
            shared(&[("cache-control", "max-age=60, private")], false),
            Err("private")
        );
        assert_eq!(shared(&[("cache-control", "max-age=60")], false), Ok(()));
        assert_eq!(
            shared(
                &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
                true
            ),
            Ok(())
        );
    }

    #[test]
    fn a_cookie_the_origin_lets_the_cache_drop_is_dropped_before_storing() {
        let fields = [
            ("cache-control", "max-age=60, no-cache=\"set-cookie\""),
            ("set-cookie", "s=1"),
        ];
        let storable = judged(&fields, false).unwrap();
        assert!(!storable.response().headers.contains_key(SET_COOKIE));
    }

    #[test]
    fn route_mode_refuses_what_its_policy_refuses_and_the_invariant_too() {
        let policy = ResponsePolicy {
            statuses: &[StatusCode::OK],
            max_body: 1024,
        };
        let refused = Storable::for_route(response(&[("set-cookie", "a=1")]), &Method::GET, policy);
        assert_eq!(refused.unwrap_err().0, "set-cookie");
        assert!(Storable::for_route(response(&[]), &Method::GET, policy).is_ok());
    }

    mod properties {
        use super::*;
        use crate::shared::targeted::effective_cache_control;
        use proptest::prelude::*;

        /// Field lines a hostile or careless origin might send, in any number and order.
        fn field() -> impl Strategy<Value = (&'static str, String)> {
            let directive = prop::sample::select(vec![
                "max-age=60",
                "s-maxage=60",
                "public",
                "private",
                "private=\"set-cookie\"",
                "private=\"x-user\"",
                "no-cache=\"set-cookie\"",
                "no-cache",
                "no-store",
                "must-understand",
                "stale-while-revalidate=30",
                "max-age=10000;other-device",
                "&&&",
                "PRIVATE",
            ]);
            let line = prop::collection::vec(directive, 0..4).prop_map(|d| d.join(", "));
            let name = prop::sample::select(vec![
                "cache-control",
                "cdn-cache-control",
                "surrogate-control",
                "set-cookie",
                "Set-Cookie",
                "etag",
                "expires",
                "vary",
            ]);
            (name, line)
        }

        proptest! {
            #[test]
            fn no_entry_carries_a_cookie_or_private_unless_opted_in(
                fields in prop::collection::vec(field(), 0..6),
                status in prop::sample::select(vec![200u16, 203, 204, 301, 404, 500, 599]),
                authorization in any::<bool>(),
                store_set_cookie in any::<bool>(),
            ) {
                let mut headers = HeaderMap::new();
                for (name, value) in &fields {
                    if let Ok(value) = HeaderValue::from_str(value) {
                        headers.append(*name, value);
                    }
                }
                let mut request_headers = HeaderMap::new();
                if authorization {
                    request_headers.insert("authorization", HeaderValue::from_static("Bearer t"));
                }
                let stored = StoredResponse {
                    status: StatusCode::from_u16(status).unwrap(),
                    headers: headers.clone(),
                    body: Bytes::from_static(b"x").into(),
                };
                let targeted = [
                    http::HeaderName::from_static("cdn-cache-control"),
                    http::HeaderName::from_static("surrogate-control"),
                ];
                let cc = effective_cache_control(&headers, &targeted, "cache-middleware");
                let rules = SharedRules {
                    method: &Method::GET,
                    request_headers: &request_headers,
                    request_cc: &CacheControl::default(),
                    cc: &cc,
                    store_set_cookie,
                };
                if let Ok(storable) = Storable::for_shared(stored.clone(), &rules) {
                    let kept = &storable.response().headers;
                    prop_assert!(store_set_cookie || !kept.contains_key(SET_COOKIE));
                    prop_assert!(!cc.private_whole());
                    let own = CacheControl::from_field_lines(&headers);
                    let targeted_present = targeted.iter().any(|f| headers.contains_key(f));
                    prop_assert!(targeted_present || !own.private_whole());
                    prop_assert!(!authorization || cc.public || cc.s_maxage.is_some() || cc.must_revalidate);
                }
                let policy = ResponsePolicy { statuses: &[StatusCode::OK], max_body: 1024 };
                if let Ok(storable) = Storable::for_route(stored, &Method::GET, policy) {
                    let kept = &storable.response().headers;
                    prop_assert!(!kept.contains_key(SET_COOKIE));
                    prop_assert!(!CacheControl::from_field_lines(kept).private);
                }
            }
        }
    }
}
