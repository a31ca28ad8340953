//! Backups of a whole cluster to one file, and restores of one into a fresh cluster.
//!
//! [`format`] is the file (versioned, checksummed records, written under a temporary name
//! and renamed); [`run`] takes a backup from a running cluster and restores one, streaming
//! a page at a time. What the nodes do is in `node::core::backup`.

pub mod format;
pub mod run;

pub use format::{BackupError, BackupReader, BackupWriter, CatalogEntry, FORMAT_VERSION, Record};
pub use run::{KeyspaceSummary, Progress, Summary, backup, restore, verify};
