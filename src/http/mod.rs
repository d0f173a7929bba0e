//! HTTP/1.1 on the wire: requests rendered once to bytes, responses parsed incrementally.

pub mod request;
pub mod response;
