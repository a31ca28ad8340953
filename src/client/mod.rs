//! The client side: the async client library over QUIC ([`conn`]), speaking
//! [`crate::protocol`], its client sessions ([`session`]), scans that page through a strong keyspace ([`scan`]),
//! and the typed keyspace handles applications use ([`typed`]).

pub mod clock;
pub mod conn;
pub mod scan;
pub mod session;
pub mod txn;
pub mod typed;
pub mod watch;

pub use conn::{Client, ClientOptions, ConnError, Resend};
pub use scan::{ScanPage, ScanRequest, Scanner};
pub use txn::{Transaction, TransactionOutcome};
pub use typed::{
    CounterKeyspace, EventualKeyspace, LwwKeyspace, MvRegKeyspace, OpenError, SetKeyspace,
    StrongKeyspace,
};
pub use watch::Watch;
