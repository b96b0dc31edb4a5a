//! Cache rules as pure functions: each returns a decision together with its reason, so that the request
//! path can log and count why something was or was not cached.

mod cache_control;
mod request;
mod response;

pub use cache_control::CacheControl;
pub(crate) use cache_control::parse_delta_seconds;
pub use request::{classify_request, BypassReason, RequestDecision, RequestPolicy};
pub(crate) use response::{sorted_vary, vary_names};
pub use response::{
    classify_response, is_hop_by_hop, ResponseDecision, ResponsePolicy, SkipReason,
};
