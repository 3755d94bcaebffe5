//! The loyalty core (README: loyalty core): programs and an exactly-once ledger on SQLite or
//! PostgreSQL with one set of rules, its HTTP API, and the job that lets points lapse.

pub mod api;
mod apply;
mod audit;
pub mod card_api;
mod expiry;
mod figures;
mod ledger;
pub mod lifecycle;
mod metrics;
pub mod org;
pub mod org_api;
mod pg;
mod pg_batch;
mod program;
mod registry;
mod sqlite;

pub use api::{CardBalances, LoyaltyApi};
pub use apply::{LedgerTx, Submitted};
pub use audit::{AuditEntry, AuditRecord};
pub use expiry::run_expiry;
pub use figures::{CardCounts, HourCount, StoreDay};
pub use ledger::{Balance, Known, Ledger, LedgerEntry, LedgerError, Outcome, Status};
pub use lifecycle::{Handover, Moved, Overdraft};
pub use metrics::LoyaltyMetrics;
pub use org::{Brand, BrandFields, Store, StoreFields};
pub use registry::{DeviceKind, RegisteredDevice, Registration};

/// The ledger's connections, for the async side.
pub type LedgerPool = crate::pool::Pool<Ledger>;
pub use program::Program;
