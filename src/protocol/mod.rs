//! The client protocol (ALPN `capdial-client/2`): what a client asks a node and what the node
//! answers, for data ([`data`], re-exported here) and for the cluster itself ([`admin`]). The
//! node and the client library both speak it; neither owns it.

pub mod access;
pub mod admin;
pub mod data;

pub use data::*;
