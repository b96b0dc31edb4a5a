//! Cache rules as pure functions: each returns a decision together with its reason, so that the request
//! path can log and count why something was or was not cached.

mod cache_control;
mod date;
mod early_refresh;
mod forwarding;
mod request;
mod response;

pub(crate) use cache_control::parse_delta_seconds;
pub use cache_control::CacheControl;
pub(crate) use date::http_date;
pub(crate) use early_refresh::refresh_early_now;
#[cfg(feature = "proxy")]
pub(crate) use forwarding::EdgeSettled;
#[cfg(feature = "proxy")]
pub(crate) use forwarding::{is_forwarding, is_override};
pub(crate) use forwarding::{renaming_fields_of, with_renaming};
pub(crate) use request::ask_for_the_whole;
pub use request::{
    classify_request, names_two_hosts, safe_method_with_content, BypassReason, RequestDecision,
    RequestPolicy,
};
#[cfg(feature = "proxy")]
pub(crate) use response::HOP_BY_HOP;
pub(crate) use response::{answers_the_request_alone, sorted_vary, vary_names};
pub use response::{
    classify_response, is_hop_by_hop, ResponseDecision, ResponsePolicy, SkipReason,
};
