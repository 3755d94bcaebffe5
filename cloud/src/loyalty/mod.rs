//! The loyalty core (CONTRACT §6), begun: programs and an exactly-once ledger on SQLite.
//! Not yet served: its HTTP API, the PostgreSQL store, the router from the ingest and the
//! card balances sent back to devices are to come (`ferry-cloud loyalty` says so).

mod ledger;
mod program;

pub use ledger::{Balance, Ledger, LedgerError, Outcome, Status};
pub use program::Program;
