//! The loyalty core (CONTRACT §6): programs and an exactly-once ledger on SQLite or
//! PostgreSQL with one set of rules, its HTTP API, and the job that lets points lapse.

pub mod api;
mod apply;
mod expiry;
mod ledger;
mod metrics;
mod pg;
mod program;
mod sqlite;

pub use api::{CardBalances, LoyaltyApi};
pub use expiry::run_expiry;
pub use ledger::{Balance, Ledger, LedgerEntry, LedgerError, Outcome, Status, StoreDay};
pub use metrics::LoyaltyMetrics;

/// The ledger's connections, for the async side.
pub type LedgerPool = crate::pool::Pool<Ledger>;
pub use program::Program;
