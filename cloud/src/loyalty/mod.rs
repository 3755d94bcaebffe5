//! The loyalty core (CONTRACT §6), begun: programs and an exactly-once ledger on SQLite or
//! PostgreSQL, with one set of rules. Not yet served: its HTTP API, the router from the
//! ingest and the card balances sent back to devices are to come (`ferry-cloud loyalty`
//! says so).

mod apply;
mod ledger;
mod pg;
mod program;
mod sqlite;

pub use ledger::{Balance, Ledger, LedgerError, Outcome, Status};
pub use program::Program;
