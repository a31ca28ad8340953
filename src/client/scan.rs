//! Scans of strong keyspaces, page after page.
//!
//! A node answers one scan request with one page: at most `SCAN_LIMIT_MAX` keys and
//! `SCAN_BYTES_MAX` of keys and values, so the answer always fits a frame, and the page names
//! its last key when more follow (`next`, like etcd's `more` and the key to continue from).
//! A [`Scanner`] sends one request per page, each starting after the last key of the page
//! before, until the keys run out or it has returned the `limit` it was given.
//!
//! ```text
//!  Scanner::next_page ──Scan{prefix, after, limit}──▶ node ──▶ Answer::Scan{entries, next}
//!        ▲                                                              │
//!        └──────────── after = next (while next is Some) ◀──────────────┘
//! ```
//!
//! Each page is a read of its own (linearizable by default), so the pages together are not
//! one snapshot: a key present through the whole scan is returned exactly once, while a key
//! written or deleted between two pages may show its old state, its new state, or be missing.

use super::conn::{Client, ConnError};
use crate::protocol::{Answer, Operation, ReadLevel, Receipt};
use crate::strong::{SCAN_LIMIT_MAX, Versioned};
use bytes::Bytes;

/// What to scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRequest {
    pub keyspace: String,
    pub prefix: Bytes,
    /// Start after this key (`None`: at the first key with the prefix).
    pub after: Option<Bytes>,
    /// Keys to return over all pages (`None`: every key with the prefix).
    pub limit: Option<u64>,
    /// The read level of every page (`None`: linearizable).
    pub read: Option<ReadLevel>,
}

impl ScanRequest {
    /// Every key of `keyspace` starting with `prefix`, at the default read level.
    pub fn new(keyspace: &str, prefix: Bytes) -> ScanRequest {
        ScanRequest {
            keyspace: keyspace.to_string(),
            prefix,
            after: None,
            limit: None,
            read: None,
        }
    }
}

/// One page: its keys in order, and the receipt of the request that read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    pub entries: Vec<(Bytes, Versioned)>,
    pub receipt: Receipt,
}

/// Pages through one scan; see the module docs. Protocol: call [`Scanner::next_page`] until
/// it returns `Ok(None)`; then [`Scanner::resume_after`] says whether the `limit` left keys
/// out. An error ends the scan: the pages returned before it stand.
#[derive(Debug)]
pub struct Scanner<'c> {
    client: &'c Client,
    /// Ask this node only, as [`Client::execute_at`] does.
    pinned: Option<String>,
    keyspace: String,
    read: Option<ReadLevel>,
    cursor: Cursor,
}

impl Client {
    /// A scan that pages through `request`, following leaders like [`Client::execute`].
    pub fn scanner(&self, request: ScanRequest) -> Scanner<'_> {
        Scanner::new(self, None, request)
    }

    /// A scan that asks `endpoint` only, like [`Client::execute_at`].
    pub fn scanner_at(&self, endpoint: &str, request: ScanRequest) -> Scanner<'_> {
        Scanner::new(self, Some(endpoint.to_string()), request)
    }
}

impl<'c> Scanner<'c> {
    fn new(client: &'c Client, pinned: Option<String>, request: ScanRequest) -> Scanner<'c> {
        Scanner {
            client,
            pinned,
            keyspace: request.keyspace,
            read: request.read,
            cursor: Cursor {
                prefix: request.prefix,
                after: request.after,
                left: request.limit,
                exhausted: false,
            },
        }
    }

    /// The next page, or `None` once every key is returned or the limit is reached.
    pub async fn next_page(&mut self) -> Result<Option<ScanPage>, ConnError> {
        let Some(operation) = self.cursor.next_request() else {
            return Ok(None);
        };
        let (keyspace, read) = (&self.keyspace, self.read);
        let client = self.client;
        let (answer, receipt) = match &self.pinned {
            Some(endpoint) => {
                client
                    .execute_at(endpoint, keyspace, operation, read, None, None)
                    .await?
            }
            None => {
                client
                    .execute(keyspace, operation, read, None, None)
                    .await?
            }
        };
        let Answer::Scan { entries, next } = answer else {
            return Err(protocol_error("a scan was answered with something else"));
        };
        self.cursor.take(&entries, next.as_ref())?;
        Ok(Some(ScanPage { entries, receipt }))
    }

    /// After the last page: the key to continue after when the limit stopped the scan while
    /// more keys followed (`None`: every key was returned).
    pub fn resume_after(&self) -> Option<&Bytes> {
        self.cursor.resume_after()
    }
}

/// Where a scan stands between pages. Pure, so its checks are tested without a node.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor {
    prefix: Bytes,
    /// The last key returned, or the request's `after` before the first page.
    after: Option<Bytes>,
    /// Keys the limit still allows (`None`: no limit).
    left: Option<u64>,
    /// The node said no key follows `after`.
    exhausted: bool,
}

impl Cursor {
    /// The request for the next page; `None` when the scan is done.
    fn next_request(&self) -> Option<Operation> {
        if self.exhausted || self.left == Some(0) {
            return None;
        }
        Some(Operation::Scan {
            prefix: self.prefix.clone(),
            limit: self.page_limit(),
            after: self.after.clone(),
        })
    }

    fn page_limit(&self) -> u32 {
        self.left.map_or(SCAN_LIMIT_MAX, |left| {
            u32::try_from(left).unwrap_or(u32::MAX).min(SCAN_LIMIT_MAX)
        })
    }

    fn resume_after(&self) -> Option<&Bytes> {
        (!self.exhausted).then_some(self.after.as_ref()).flatten()
    }

    /// Checks a page against what was asked and moves past it. A page out of order, off the
    /// prefix or not past the last key would make the scan repeat keys or never end: it is
    /// the node's error, not something to page through.
    fn take(
        &mut self,
        entries: &[(Bytes, Versioned)],
        next: Option<&Bytes>,
    ) -> Result<(), ConnError> {
        if entries.len() > self.page_limit() as usize {
            return Err(protocol_error("a scan page holds more keys than asked"));
        }
        let mut last = self.after.clone();
        for (key, _) in entries {
            let in_order = last.as_ref().is_none_or(|last| key > last);
            if !key.starts_with(&self.prefix) || !in_order {
                return Err(protocol_error(
                    "a scan page is out of order or off its prefix",
                ));
            }
            last = Some(key.clone());
        }
        if next.is_some() && (entries.is_empty() || next != last.as_ref()) {
            return Err(protocol_error(
                "a scan page must continue after its last key",
            ));
        }
        let taken = u64::try_from(entries.len()).unwrap_or(u64::MAX);
        self.left = self.left.map(|left| left.saturating_sub(taken));
        self.exhausted = next.is_none();
        self.after = last;
        Ok(())
    }
}

fn protocol_error(reason: &str) -> ConnError {
    ConnError::Protocol {
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogIndex;

    fn key(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn page(keys: &[&str]) -> Vec<(Bytes, Versioned)> {
        let version = Versioned {
            value: key("v"),
            create_revision: LogIndex(1),
            mod_revision: LogIndex(1),
        };
        keys.iter().map(|k| (key(k), version.clone())).collect()
    }

    fn cursor(limit: Option<u64>) -> Cursor {
        Cursor {
            prefix: key("p/"),
            after: None,
            left: limit,
            exhausted: false,
        }
    }

    #[test]
    fn pages_continue_after_the_last_key_until_none_follows() {
        let mut scan = cursor(None);
        let first = scan.next_request();
        assert_eq!(
            first,
            Some(Operation::Scan {
                prefix: key("p/"),
                limit: SCAN_LIMIT_MAX,
                after: None
            })
        );
        scan.take(&page(&["p/a", "p/b"]), Some(&key("p/b")))
            .unwrap();
        let second = scan.next_request();
        assert!(
            matches!(second, Some(Operation::Scan { after: Some(after), .. }) if after == "p/b")
        );
        scan.take(&page(&["p/c"]), None).unwrap();
        assert_eq!(scan.next_request(), None);
        assert_eq!(scan.resume_after(), None, "every key was returned");
    }

    #[test]
    fn a_limit_spans_pages_and_says_where_to_resume() {
        let mut scan = cursor(Some(3));
        let Some(Operation::Scan { limit, .. }) = scan.next_request() else {
            panic!("a first page");
        };
        assert_eq!(limit, 3);
        scan.take(&page(&["p/a", "p/b"]), Some(&key("p/b")))
            .unwrap();
        let Some(Operation::Scan { limit, .. }) = scan.next_request() else {
            panic!("a second page");
        };
        assert_eq!(limit, 1);
        scan.take(&page(&["p/c"]), Some(&key("p/c"))).unwrap();
        assert_eq!(scan.next_request(), None, "the limit is reached");
        assert_eq!(scan.resume_after(), Some(&key("p/c")), "more keys follow");
    }

    #[test]
    fn a_page_that_would_repeat_or_loop_is_a_protocol_error() {
        let mut scan = cursor(None);
        scan.take(&page(&["p/b"]), Some(&key("p/b"))).unwrap();
        let before = scan.clone();
        let bad: [(&[&str], Option<&str>); 5] = [
            (&["p/b"], None),        // not past the last key
            (&["p/d", "p/c"], None), // out of order
            (&["q/a"], None),        // off the prefix
            (&[], Some("p/c")),      // more, but nothing to continue after
            (&["p/c"], Some("p/z")), // continues elsewhere than its last key
        ];
        for (keys, next) in bad {
            let next = next.map(key);
            let result = scan.take(&page(keys), next.as_ref());
            assert!(
                matches!(result, Err(ConnError::Protocol { .. })),
                "{keys:?} {next:?}"
            );
            assert_eq!(scan, before, "a refused page moves nothing");
        }
    }
}
