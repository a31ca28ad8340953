//! The node's write-ahead log: what makes a commit durable without a durable redb commit.
//!
//! A durable redb commit writes every page the transaction changed and fsyncs. Writes to
//! random keys change a leaf page per key in each table they touch, so at 64 requests in
//! flight most of a node's CPU went into writing and checksumming pages that the next commit
//! would change again. Instead, [`Store::commit`](super::Store::commit) appends each batch
//! to this log, fsynced once (one sequential write), and applies it to redb with a
//! non-durable commit, which stays in memory and is visible to reads at once. Every so often
//! one commit is durable, a checkpoint: redb writes each page changed since the last one
//! once, however often it changed, records the sequence number of the last batch it holds,
//! and the log starts over. On open, the records after that number are applied again, in
//! order. etcd's WAL and its bbolt backend work the same way.
//!
//! A record is `length (u32 LE) | CRC-32 of the rest (u32 LE) | sequence (u64 LE) | payload`,
//! `length` counting the sequence and the payload. Records are only appended, and a sync
//! follows whole records, so a crash can tear only the last one: reading stops at the first
//! record that is short, fails its checksum, or does not follow its predecessor's sequence
//! number.
//!
//! The file is written full of zeros once ([`PREALLOCATED_BYTES`]) and then overwritten in
//! place, and starting over only moves the write position back to the start: an fsync of
//! data written into a file's existing blocks need not commit the file system's journal,
//! an fsync after an append does (here: 118 against 197 µs at the median, see
//! `../shared/peers`). What a new record does not overwrite is an older one, whose sequence
//! number does not follow, or part of one, whose checksum fails: either ends the log.

use super::StorageError;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The size the log file is written to once, with zeros, so records overwrite blocks the
/// file already has. A checkpoint comes once a second, and the log holds well under this
/// in a second here; a longer log grows the file.
pub const PREALLOCATED_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes before a record's payload.
const HEADER_BYTES: usize = 4 + 4 + 8;
/// Bytes of the header the length counts (the sequence number).
const SEQUENCE_BYTES: usize = 8;

/// An open log file, positioned at its end.
#[derive(Debug)]
pub struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes of records in the log (where the next one goes): what a checkpoint is measured
    /// by.
    bytes: u64,
}

/// A record read back: its sequence number and payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    pub payload: Vec<u8>,
}

impl Wal {
    /// Opens (or creates) the log at `path` and reads its whole records. The next record
    /// goes after the last whole one, over a torn one.
    pub fn open(path: &Path) -> Result<(Wal, Vec<Record>), StorageError> {
        let io = |source| StorageError::Wal {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (records, whole) = read_records(&bytes);
        let length = bytes.len() as u64;
        if length < PREALLOCATED_BYTES {
            let zeros = vec![0u8; (PREALLOCATED_BYTES - length) as usize];
            file.write_all_at(&zeros, length).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let wal = Wal {
            file,
            path: path.to_path_buf(),
            bytes: whole as u64,
        };
        Ok((wal, records))
    }

    /// Appends one record; with `sync`, returns once it is on disk (with every record before
    /// it).
    pub fn append(
        &mut self,
        sequence: u64,
        payload: &[u8],
        sync: bool,
    ) -> Result<(), StorageError> {
        let record = encode_record(sequence, payload);
        let at = self.bytes;
        self.file
            .write_all_at(&record, at)
            .map_err(|e| self.error(e))?;
        self.bytes += record.len() as u64;
        if sync {
            self.file.sync_data().map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// Starts the log over, once a checkpoint holds everything in it. The old records stay
    /// until overwritten: their sequence numbers are the checkpoint's or older, so a reader
    /// skips them, and the first that follows a new record ends the log.
    pub fn reset(&mut self) {
        self.bytes = 0;
    }

    /// Bytes in the log.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn error(&self, source: std::io::Error) -> StorageError {
        StorageError::Wal {
            path: self.path.clone(),
            source,
        }
    }
}

fn checksum(body: &[u8]) -> u32 {
    crc32fast::hash(body)
}

fn encode_record(sequence: u64, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(SEQUENCE_BYTES + payload.len())
        .expect("invariant: a batch is far below 4 GiB");
    let mut record = Vec::with_capacity(HEADER_BYTES + payload.len());
    record.extend_from_slice(&length.to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(&sequence.to_le_bytes());
    record.extend_from_slice(payload);
    let sum = checksum(&record[8..]);
    record[4..8].copy_from_slice(&sum.to_le_bytes());
    record
}

/// The whole records at the start of `bytes`, and how many bytes they take.
fn read_records(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records: Vec<Record> = Vec::new();
    let mut at = 0;
    while let Some((record, next)) = read_record(bytes, at) {
        let follows = records
            .last()
            .is_none_or(|last| last.sequence.checked_add(1) == Some(record.sequence));
        if !follows {
            break;
        }
        records.push(record);
        at = next;
    }
    (records, at)
}

/// The record at `at`, and where the next one starts; `None` if it is not whole.
fn read_record(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    let header = bytes.get(at..at + 8)?;
    let length = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let sum = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if length < SEQUENCE_BYTES {
        return None;
    }
    let body = bytes.get(at + 8..(at + 8).checked_add(length)?)?;
    if checksum(body) != sum {
        return None;
    }
    let sequence = u64::from_le_bytes(body[..SEQUENCE_BYTES].try_into().ok()?);
    let payload = body[SEQUENCE_BYTES..].to_vec();
    Some((Record { sequence, payload }, at + 8 + length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(records: &[(u64, &[u8])]) -> Vec<u8> {
        records
            .iter()
            .flat_map(|(sequence, payload)| encode_record(*sequence, payload))
            .collect()
    }

    #[test]
    fn records_read_back_in_order() {
        let bytes = log(&[(7, b"a"), (8, b""), (9, b"ccc")]);
        let (records, whole) = read_records(&bytes);
        assert_eq!(whole, bytes.len());
        let read: Vec<(u64, &[u8])> = records
            .iter()
            .map(|r| (r.sequence, r.payload.as_slice()))
            .collect();
        assert_eq!(read, [(7, &b"a"[..]), (8, b""), (9, b"ccc")]);
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_log() {
        let bytes = log(&[(1, b"first"), (2, b"second")]);
        let first = encode_record(1, b"first").len();
        for cut in first..bytes.len() {
            let (records, whole) = read_records(&bytes[..cut]);
            assert_eq!(records.len(), 1, "cut at {cut}");
            assert_eq!(whole, first);
        }
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(read_records(&flipped).0.len(), 1);
        let mut zeroed = bytes.clone();
        zeroed.extend_from_slice(&[0; 64]);
        assert_eq!(
            read_records(&zeroed).1,
            bytes.len(),
            "zeros after the end are no record"
        );
    }

    #[test]
    fn a_record_that_does_not_follow_its_predecessor_ends_the_log() {
        let bytes = log(&[(4, b"a"), (5, b"b"), (3, b"stale"), (6, b"c")]);
        let (records, _) = read_records(&bytes);
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn a_reopened_log_cuts_its_torn_tail_and_appends_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        {
            let (mut wal, records) = Wal::open(&path).unwrap();
            assert!(records.is_empty());
            wal.append(1, b"one", true).unwrap();
            wal.append(2, b"two", false).unwrap();
        }
        // Tear the second record: its last two bytes never reached the disk.
        let mut bytes = std::fs::read(&path).unwrap();
        let end = encode_record(1, b"one").len() + encode_record(2, b"two").len();
        bytes[end - 2..end].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        {
            let (mut wal, records) = Wal::open(&path).unwrap();
            assert_eq!(records.len(), 1);
            wal.append(2, b"again", true).unwrap();
        }
        let (mut wal, records) = Wal::open(&path).unwrap();
        let sequences: Vec<u64> = records.iter().map(|r| r.sequence).collect();
        assert_eq!(sequences, [1, 2]);
        assert_eq!(records[1].payload, b"again");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATED_BYTES);
        // Started over: the new record overwrites the first; the old second one no longer
        // follows it.
        wal.reset();
        assert_eq!(wal.bytes(), 0);
        wal.append(3, b"new", true).unwrap();
        let (_, records) = Wal::open(&path).unwrap();
        let sequences: Vec<u64> = records.iter().map(|r| r.sequence).collect();
        assert_eq!(sequences, [3]);
    }
}
