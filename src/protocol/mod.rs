//! The client protocol (ALPN `capdial-client/2`): what a client asks a node and what the node
//! answers, for data ([`data`], re-exported here) and for the cluster itself ([`admin`]). The
//! node and the client library both speak it; neither owns it.

pub mod access;
pub mod admin;
pub mod data;
pub mod watch;

pub use data::*;
pub use watch::{
    FeedPosition, WATCH_BYTES_MAX, WATCH_LIMIT_MAX, WATCH_WAIT_MAX_MS, WatchEvent, WatchFrom,
};
