//! Why a node stops.

use super::core::CoreError;
use crate::net::tls::CertError;
use crate::storage::StorageError;
use crate::types::NodeId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("certificates")]
    Cert(#[from] CertError),
    #[error("storage")]
    Storage(#[from] StorageError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve {address} (member {id})")]
    Resolve { id: NodeId, address: String },
    #[error("starting: {0}")]
    Boot(String),
    /// The core stopped: storage failed, or a replica broke a local invariant (fail-stop).
    #[error(transparent)]
    Core(#[from] CoreError),
}
