//! Whether a shared cache may store a response (RFC 9111 §3, §3.5), and in what form.

use super::freshness::{has_explicit_freshness, heuristically_cacheable};
use crate::entry::StoredResponse;
use crate::policy::{answers_the_request_alone, CacheControl};
use crate::ranges::held_range;
use http::header::{HeaderMap, AUTHORIZATION, ETAG, LAST_MODIFIED, SET_COOKIE};
use http::{Method, StatusCode};

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Method,
    Status,
    ClientError,
    RequestNoStore,
    NoStore,
    Private,
    Authorization,
    VaryStar,
    SetCookie,
    NoFreshness,
}

impl NotStored {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::ClientError => "client-error",
            NotStored::RequestNoStore => "request-no-store",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::VaryStar => "vary-star",
            NotStored::SetCookie => "set-cookie",
            NotStored::NoFreshness => "no-freshness-or-validator",
        }
    }

    /// Whether `reason` (an [`as_str`](Self::as_str)) is about what one request carried (its
    /// credentials, its `no-store`), not about the URL's response: such a response says nothing
    /// of whether the next request's can be stored. (A client error that answers one request is
    /// told by its status, for both modes: `Flights::remember_uncacheable`.)
    pub(crate) fn is_about_the_request(reason: &str) -> bool {
        [NotStored::Authorization, NotStored::RequestNoStore]
            .iter()
            .any(|of_the_request| of_the_request.as_str() == reason)
    }
}

/// What the decision needs to know about the exchange.
pub(crate) struct Exchanged<'a> {
    pub method: &'a Method,
    pub request_headers: &'a HeaderMap,
    pub request_cc: &'a CacheControl,
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    pub cc: &'a CacheControl,
    pub vary: &'a [String],
}

/// §3: a shared cache stores a response only when every condition holds.
pub(crate) fn may_store(x: &Exchanged<'_>, store_set_cookie: bool) -> Result<(), NotStored> {
    if x.method != Method::GET {
        return Err(NotStored::Method);
    }
    // 304 is not a complete response; informational ones are not final. A 206 is stored only
    // when it says which part it holds of how much (§3.3), under a key of its own (`partial_key`).
    let status = x.status.as_u16();
    let usable_part = status != 206 || held_range(x.headers).is_some();
    if status < 200 || status == 304 || !usable_part {
        return Err(NotStored::Status);
    }
    if answers_the_request_alone(x.status) {
        return Err(NotStored::ClientError);
    }
    if x.request_cc.no_store {
        return Err(NotStored::RequestNoStore);
    }
    // §5.2.2.3: with must-understand, the status code decides, and no-store gives way to it.
    let understood = x.status.canonical_reason().is_some();
    if x.cc.must_understand && !understood {
        return Err(NotStored::Status);
    }
    if x.cc.no_store && !(x.cc.must_understand && understood) {
        return Err(NotStored::NoStore);
    }
    if x.cc.private_whole() {
        return Err(NotStored::Private);
    }
    // §3.5: a response to an authenticated request only with explicit permission to share it.
    if x.request_headers.contains_key(AUTHORIZATION)
        && !(x.cc.public || x.cc.s_maxage.is_some() || x.cc.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    if x.vary.iter().any(|name| name == "*") {
        return Err(NotStored::VaryStar);
    }
    // A cookie set for one client is never replayed to others unless asked for.
    if !store_set_cookie && x.headers.contains_key(SET_COOKIE) {
        let strips_it =
            x.cc.no_cache_fields
                .iter()
                .chain(&x.cc.private_fields)
                .any(|f| f == "set-cookie");
        if !strips_it {
            return Err(NotStored::SetCookie);
        }
    }
    let reusable =
        has_explicit_freshness(x.cc, x.headers) || x.cc.public || heuristically_cacheable(x.status);
    if !reusable {
        return Err(NotStored::NoFreshness);
    }
    Ok(())
}

/// Whether a conditional request can revalidate the response.
pub(crate) fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// Drops the fields `no-cache="..."` and `private="..."` name: a shared cache may keep the rest
/// (§5.2.2.4, §5.2.2.7), and never sends those fields from storage.
pub(crate) fn strip_named_fields(stored: &mut StoredResponse, cc: &CacheControl) {
    for name in cc.no_cache_fields.iter().chain(&cc.private_fields) {
        stored.headers.remove(name.as_str());
    }
}
