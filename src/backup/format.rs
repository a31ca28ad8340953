//! The backup file: a magic, a format version, then checksummed records.
//!
//! ```text
//! +----------+-------------+--------------------------------------------------------+
//! | CAPDIALB | version u32 | record: length u32 | crc32 u32 | payload (Record) ...  |
//! +----------+-------------+--------------------------------------------------------+
//!   records: Header (the catalog), then per keyspace: Keyspace, Chunk..., KeyspaceEnd;
//!            then End (record count and the CRC-32 of every byte before it)
//! ```
//!
//! Integers are little-endian. Each payload is a [`Record`] in the codec's unframed form
//! ([`crate::wire::unframed`]), at most [`crate::wire::FRAME_BYTES_MAX`] bytes, with the
//! CRC-32 (IEEE, [`crc32fast`]) of its bytes before it. A chunk's data is what the node
//! served, unchanged: a strong keyspace's image chunk ([`crate::strong::store::ImageChunk`])
//! or an eventual keyspace's page ([`crate::eventual::backup::EventualPage`]).
//!
//! A reader checks every record's length bound and checksum before decoding it, the order
//! of the records, and the `End` record's count and whole-file checksum, and that nothing
//! follows it: a flipped byte, a truncated file or a file with records cut out or swapped
//! is refused with a [`BackupError`] naming the offset. The file is written under a
//! temporary name beside the target, synced, and renamed over it
//! ([`BackupWriter::finish`]), so a crash never leaves a half-written file under the name.

use crate::protocol::KeyspaceMode;
use crate::types::LogIndex;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"CAPDIALB";
/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the first record: the magic and the version.
const PREAMBLE_BYTES: u64 = 12;
/// Bytes before each record's payload: its length and its checksum.
const RECORD_HEADER_BYTES: u64 = 8;
/// The largest record payload: a page a node serves fits a frame, and so does its record.
pub const RECORD_BYTES_MAX: usize = crate::wire::FRAME_BYTES_MAX;

/// Why a backup could not be written, read or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a capdial backup (the file does not start with {MAGIC:?})")]
    NotABackup,
    #[error("backup format version {found}; this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion { found: u32 },
    /// The file ends before its `End` record: cut short (a copy that did not finish).
    #[error("the backup is truncated: it ends at byte {offset} inside or before a record")]
    Truncated { offset: u64 },
    /// A record's bytes do not match its checksum (or the file's does not): the file is
    /// corrupted.
    #[error("the backup is corrupted at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    /// A record that is whole but does not belong where it is.
    #[error("the backup is malformed at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    /// The cluster refused or failed a request.
    #[error("the cluster: {0}")]
    Cluster(#[from] crate::client::ConnError),
    /// A restore needs an empty cluster.
    #[error("the cluster already holds keyspace {name:?}: restore into a fresh, empty cluster")]
    ClusterNotEmpty { name: String },
    /// The restore was refused or cut short; `cleaned` says whether the keyspaces it created
    /// were dropped again.
    #[error("restoring {keyspace:?} failed (the keyspaces it created {}): {source}", if *cleaned { "were dropped again" } else { "may remain: drop them" })]
    RestoreFailed {
        keyspace: String,
        cleaned: bool,
        #[source]
        source: Box<BackupError>,
    },
    /// A keyspace whose mode backups do not cover (paxos: reading it consistently needs a
    /// round per key). Nothing was written.
    #[error(
        "keyspace {keyspace:?} is a {mode} keyspace, which backups do not cover yet; nothing was written"
    )]
    Unsupported {
        keyspace: String,
        mode: crate::protocol::KeyspaceMode,
    },
}

/// One record of the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The first record: when the backup began and the catalog, in the order the keyspace
    /// sections follow.
    Header {
        created_unix_ms: u64,
        catalog: Vec<CatalogEntry>,
    },
    /// A keyspace's section starts.
    Keyspace(CatalogEntry),
    /// A page of the keyspace's data, as the node served it.
    Chunk(Bytes),
    /// A keyspace's section ends: its chunks and keys.
    KeyspaceEnd { chunks: u64, keys: u64 },
    /// The last record: how many came before it and the CRC-32 of every byte before it.
    End { records: u64, file_crc: u32 },
}

/// A keyspace as the backup holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub name: String,
    pub mode: KeyspaceMode,
    /// A strong keyspace's revision: the log index of the image (its keyspace revision).
    pub revision: Option<LogIndex>,
}

/// Writes a backup file record by record under a temporary name; [`BackupWriter::finish`]
/// renames it into place.
pub struct BackupWriter {
    out: BufWriter<File>,
    path: PathBuf,
    temporary: PathBuf,
    records: u64,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl BackupWriter {
    /// Starts `path` (as `path.tmp-PID` until finished) with the preamble.
    pub fn create(path: &Path) -> Result<BackupWriter, BackupError> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        let temporary = path.with_file_name(name);
        let file = File::create(&temporary).map_err(|source| BackupError::Io {
            action: "creating",
            path: temporary.clone(),
            source,
        })?;
        let mut writer = BackupWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            temporary,
            records: 0,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        };
        let mut preamble = MAGIC.to_vec();
        preamble.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        writer.put(&preamble)?;
        Ok(writer)
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(|source| BackupError::Io {
            action: "writing",
            path: self.temporary.clone(),
            source,
        })
    }

    /// Appends one record.
    pub fn record(&mut self, record: &Record) -> Result<(), BackupError> {
        let payload =
            crate::wire::unframed::encode(record).map_err(|error| BackupError::Malformed {
                offset: self.bytes,
                reason: format!("encoding a record: {error}"),
            })?;
        if payload.len() > RECORD_BYTES_MAX {
            return Err(BackupError::Malformed {
                offset: self.bytes,
                reason: format!("a record of {} bytes exceeds the limit", payload.len()),
            });
        }
        let length = payload.len() as u32;
        let crc = crc32fast::hash(&payload);
        let mut header = length.to_le_bytes().to_vec();
        header.extend_from_slice(&crc.to_le_bytes());
        self.put(&header)?;
        self.put(&payload)?;
        self.records += 1;
        Ok(())
    }

    /// Appends the `End` record, syncs the file and renames it over the target (syncing
    /// the directory, so the rename survives a crash). Returns the file's size.
    pub fn finish(mut self) -> Result<u64, BackupError> {
        let end = Record::End {
            records: self.records,
            file_crc: self.crc.clone().finalize(),
        };
        self.record(&end)?;
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| BackupError::Io {
                action,
                path,
                source,
            }
        };
        self.out.flush().map_err(io("writing", &self.temporary))?;
        let file = self
            .out
            .into_inner()
            .map_err(|error| error.into_error())
            .map_err(io("writing", &self.temporary))?;
        file.sync_all().map_err(io("syncing", &self.temporary))?;
        std::fs::rename(&self.temporary, &self.path).map_err(io("renaming", &self.path))?;
        if let Some(dir) = self.path.parent().filter(|dir| !dir.as_os_str().is_empty())
            && let Ok(dir) = File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(self.bytes)
    }

    /// Gives the file up: the temporary file goes.
    pub fn abandon(self) {
        let temporary = self.temporary.clone();
        drop(self);
        let _ = std::fs::remove_file(temporary);
    }
}

/// Reads a backup file record by record, checking each as it comes (see the module docs).
pub struct BackupReader {
    input: BufReader<File>,
    path: PathBuf,
    offset: u64,
    records: u64,
    crc: crc32fast::Hasher,
    ended: bool,
}

impl BackupReader {
    /// Opens `path` and checks its preamble.
    pub fn open(path: &Path) -> Result<BackupReader, BackupError> {
        let file = File::open(path).map_err(|source| BackupError::Io {
            action: "opening",
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BackupReader {
            input: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            offset: 0,
            records: 0,
            crc: crc32fast::Hasher::new(),
            ended: false,
        };
        let mut preamble = [0u8; PREAMBLE_BYTES as usize];
        if !reader.fill(&mut preamble)? || &preamble[..8] != MAGIC {
            return Err(BackupError::NotABackup);
        }
        let found = u32::from_le_bytes(preamble[8..12].try_into().expect("4 bytes"));
        if found != FORMAT_VERSION {
            return Err(BackupError::UnsupportedVersion { found });
        }
        Ok(reader)
    }

    /// Reads exactly `buffer.len()` bytes; false if the file ended first.
    fn fill(&mut self, buffer: &mut [u8]) -> Result<bool, BackupError> {
        let mut read = 0;
        while read < buffer.len() {
            match self.input.read(&mut buffer[read..]) {
                Ok(0) => return Ok(false),
                Ok(n) => read += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(BackupError::Io {
                        action: "reading",
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        self.crc.update(buffer);
        self.offset += buffer.len() as u64;
        Ok(true)
    }

    /// The next record, checked; `None` after `End` (and only if nothing follows it).
    pub fn next_record(&mut self) -> Result<Option<Record>, BackupError> {
        if self.ended {
            return Ok(None);
        }
        let start = self.offset;
        let file_crc = self.crc.clone().finalize();
        let mut header = [0u8; RECORD_HEADER_BYTES as usize];
        if !self.fill(&mut header)? {
            return Err(BackupError::Truncated { offset: start });
        }
        let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if length > RECORD_BYTES_MAX {
            return Err(BackupError::Corrupt {
                offset: start,
                reason: format!("a record length of {length} bytes is past the limit"),
            });
        }
        let mut payload = vec![0u8; length];
        if !self.fill(&mut payload)? {
            return Err(BackupError::Truncated { offset: start });
        }
        if crc32fast::hash(&payload) != crc {
            return Err(BackupError::Corrupt {
                offset: start,
                reason: "the record does not match its checksum".to_string(),
            });
        }
        let record: Record = crate::wire::unframed::decode_bounded(&payload).map_err(|error| {
            BackupError::Malformed {
                offset: start,
                reason: format!("the record does not decode: {error}"),
            }
        })?;
        if let Record::End {
            records,
            file_crc: expected,
        } = &record
        {
            if *records != self.records || *expected != file_crc {
                return Err(BackupError::Corrupt {
                    offset: start,
                    reason: "the file does not match its end record (records or checksum)"
                        .to_string(),
                });
            }
            let mut after = [0u8; 1];
            if self.fill(&mut after)? {
                return Err(BackupError::Malformed {
                    offset: self.offset - 1,
                    reason: "bytes follow the end record".to_string(),
                });
            }
            self.ended = true;
        }
        self.records += 1;
        Ok(Some(record))
    }

    /// Where the next record starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(path: &Path) -> u64 {
        let mut writer = BackupWriter::create(path).unwrap();
        let entry = CatalogEntry {
            name: "orders".into(),
            mode: KeyspaceMode::Strong,
            revision: Some(LogIndex(9)),
        };
        writer
            .record(&Record::Header {
                created_unix_ms: 1,
                catalog: vec![entry.clone()],
            })
            .unwrap();
        writer.record(&Record::Keyspace(entry)).unwrap();
        writer
            .record(&Record::Chunk(Bytes::from_static(b"some bytes")))
            .unwrap();
        writer
            .record(&Record::KeyspaceEnd { chunks: 1, keys: 0 })
            .unwrap();
        writer.finish().unwrap()
    }

    fn read_all(path: &Path) -> Result<Vec<Record>, BackupError> {
        let mut reader = BackupReader::open(path)?;
        let mut records = Vec::new();
        while let Some(record) = reader.next_record()? {
            records.push(record);
        }
        Ok(records)
    }

    #[test]
    fn a_written_file_reads_back_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.capdial");
        sample(&path);
        let records = read_all(&path).unwrap();
        assert_eq!(records.len(), 5);
        assert!(matches!(
            records.last(),
            Some(Record::End { records: 4, .. })
        ));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the backup itself");
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.capdial");
        let size = sample(&path);
        let good = std::fs::read(&path).unwrap();
        assert_eq!(good.len() as u64, size);
        let bad = dir.path().join("bad");
        for at in 0..good.len() {
            let mut bytes = good.clone();
            bytes[at] ^= 0x20;
            std::fs::write(&bad, &bytes).unwrap();
            assert!(read_all(&bad).is_err(), "flipped byte {at} was taken");
            std::fs::write(&bad, &good[..at]).unwrap();
            let error = read_all(&bad).unwrap_err();
            assert!(
                matches!(
                    error,
                    BackupError::Truncated { .. } | BackupError::NotABackup
                ),
                "cut at {at}: {error}"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&bad, &longer).unwrap();
        assert!(matches!(read_all(&bad), Err(BackupError::Malformed { .. })));
    }
}
