//! How one transaction changes the ledger, written once against [`LedgerTx`] so that SQLite
//! and PostgreSQL apply exactly the same rules.

use ferry_shared::{Timestamp, Txn, TxnOp, rules};

use super::program::Program;
use super::{LedgerError, Outcome, Status};

/// The statements both stores run: SQLite takes PostgreSQL's `$n` placeholders too.
pub mod sql {
    pub const CONTENT: &str = "SELECT content FROM ledger WHERE tx_id = $1";
    pub const PROGRAM: &str = "SELECT body FROM programs WHERE id = $1";
    pub const BALANCE: &str = "SELECT balance FROM balances WHERE card = $1 AND program = $2";
    pub const TARGET: &str =
        "SELECT delta, card, program, reversed_by, store FROM ledger WHERE tx_id = $1";
    pub const DEVICE: &str = "SELECT kind, store, retired_at FROM devices WHERE id = $1";
    pub const STORE: &str = "SELECT id FROM stores WHERE id = $1";
    pub const BLOCKED: &str = "SELECT card FROM card_blocks WHERE card = $1";
    pub const HOLD: &str = "INSERT INTO held (tx_id, device, held_at) VALUES ($1, $2, $3)
         ON CONFLICT (tx_id) DO NOTHING";
    pub const UNHOLD: &str = "DELETE FROM held WHERE tx_id = $1";
    pub const MARK_REVERSED: &str = "UPDATE ledger SET reversed_by = $1 WHERE tx_id = $2";
    pub const CARD: &str =
        "INSERT INTO cards (card, created_at) VALUES ($1, $2) ON CONFLICT (card) DO NOTHING";
    pub const SET_BALANCE: &str = "INSERT INTO balances (card, program, balance, flagged)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (card, program) DO UPDATE SET balance = excluded.balance,
             flagged = balances.flagged OR excluded.flagged";
    pub const RECORD: &str = "INSERT INTO ledger
         (tx_id, content, card, program, store, op, delta, offline, applied_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    /// Points earned (or moved in from another card) before the cutoff and not reversed
    /// since.
    pub const EARNED_BEFORE: &str = "SELECT CAST(COALESCE(SUM(delta), 0) AS BIGINT) FROM ledger
         WHERE card = $1 AND program = $2 AND op IN ('earn', 'transfer') AND reversed_by IS NULL
           AND delta > 0 AND applied_at < $3";
    /// Points gone already: redeemed (and not reversed), lapsed, or moved to another card.
    pub const SPENT: &str = "SELECT CAST(COALESCE(-SUM(delta), 0) AS BIGINT) FROM ledger
         WHERE card = $1 AND program = $2 AND op IN ('redeem', 'expire', 'transfer')
           AND delta < 0 AND reversed_by IS NULL";
}

/// What the rules need from a database transaction.
pub trait LedgerTx {
    /// Takes, in one global order, the locks that the batch's transactions will need, so
    /// that two writers never wait on each other in a cycle.
    fn lock(&mut self, keys: &[(&str, &str)]) -> Result<(), LedgerError>;
    /// The canonical content of an applied transaction.
    fn content(&mut self, tx_id: &str) -> Result<Option<String>, LedgerError>;
    /// The program's JSON.
    fn program(&mut self, id: &str) -> Result<Option<String>, LedgerError>;
    /// The card's balance in a program (locked by `lock`); 0 for a card never seen.
    fn balance(&mut self, card: &str, program: &str) -> Result<i64, LedgerError>;
    /// `(delta, card, program, reversed_by)` of an applied transaction.
    fn target(&mut self, tx_id: &str) -> Result<Option<Target>, LedgerError>;
    /// The device's registration: (kind, store, retired).
    fn registration(&mut self, device: &str) -> Result<Option<Registered>, LedgerError>;
    /// Runs one statement of `sql` with text parameters.
    fn exec_text(&mut self, sql: &str, params: &[&str]) -> Result<(), LedgerError>;
    /// The rows of a query with text parameters whose columns are all text.
    fn texts(&mut self, sql: &str, params: &[&str]) -> Result<Rows, LedgerError>;
    /// Whether `store` is a store record (`PUT /v1/stores/{id}`).
    fn store_known(&mut self, store: &str) -> Result<bool, LedgerError> {
        Ok(!self.texts(sql::STORE, &[store])?.is_empty())
    }
    /// Whether `card` is blocked (`POST /v1/cards/{card}/block`).
    fn card_blocked(&mut self, card: &str) -> Result<bool, LedgerError> {
        Ok(!self.texts(sql::BLOCKED, &[card])?.is_empty())
    }
    /// Puts a transaction from an unregistered device on the held list.
    fn hold(&mut self, tx_id: &str, device: &str, at: &str) -> Result<(), LedgerError> {
        self.exec_text(sql::HOLD, &[tx_id, device, at])
    }
    /// Takes a judged transaction off the held list.
    fn unhold(&mut self, tx_id: &str) -> Result<(), LedgerError> {
        self.exec_text(sql::UNHOLD, &[tx_id])
    }
    fn mark_reversed(&mut self, tx_id: &str, by: &str) -> Result<(), LedgerError>;
    fn set_balance(
        &mut self,
        card: &str,
        program: &str,
        balance: i64,
        now: &str,
    ) -> Result<(), LedgerError>;
    fn record(&mut self, entry: &Entry<'_>) -> Result<(), LedgerError>;
    /// The points of the card in the program earned before `cutoff`, and not reversed.
    fn earned_before(
        &mut self,
        card: &str,
        program: &str,
        cutoff: &str,
    ) -> Result<i64, LedgerError>;
    /// The points of the card in the program redeemed or lapsed, all told.
    fn spent(&mut self, card: &str, program: &str) -> Result<i64, LedgerError>;
    /// Applies a batch under the rules, one outcome per transaction, in order (the caller
    /// commits). A store may answer the rules' questions for the whole batch at once.
    fn apply_batch(&mut self, batch: &[Submitted]) -> Result<Vec<Outcome>, LedgerError> {
        apply_rules(self, batch)
    }
}

/// Rows of text columns, as [`LedgerTx::texts`] reads them.
pub type Rows = Vec<Vec<Option<String>>>;

/// An applied transaction that a reversal names.
#[derive(Debug)]
pub struct Target {
    pub delta: i64,
    pub card: String,
    pub program: String,
    pub reversed_by: Option<String>,
    pub store: String,
}

/// A device's row in the registry.
#[derive(Debug, Clone)]
pub struct Registered {
    pub kind: String,
    pub store: Option<String>,
    pub retired: bool,
}

/// A transaction as the ingest's router sends it: with the device it came from, whose
/// registration then decides whether it may apply. `None` from other API clients, whom the
/// token alone admits.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub txn: Txn,
    pub device: Option<String>,
    /// Posted by an admin, who alone may reverse another store's entry or a system entry
    /// (`expire:*`) — unless it names a `device`, which is then judged as that device's;
    /// everyone else's reversal names an entry of the reversal's own store, which the API
    /// has checked is the caller's.
    pub admin: bool,
}

/// A ledger row.
#[derive(Debug)]
pub struct Entry<'a> {
    pub tx_id: &'a str,
    pub content: &'a str,
    pub card: &'a str,
    pub program: &'a str,
    pub store: &'a str,
    pub op: &'static str,
    pub delta: i64,
    pub offline: bool,
    pub at: &'a str,
}

pub fn op_name(op: TxnOp) -> &'static str {
    match op {
        TxnOp::Stamp => "stamp",
        TxnOp::Earn => "earn",
        TxnOp::Redeem => "redeem",
        TxnOp::Reverse => "reverse",
    }
}

/// Applies a batch in one database transaction (the caller commits): the rules, for any
/// [`LedgerTx`].
pub fn apply_rules<T: LedgerTx + ?Sized>(
    tx: &mut T,
    batch: &[Submitted],
) -> Result<Vec<Outcome>, LedgerError> {
    let mut keys: Vec<(&str, &str)> = batch
        .iter()
        .map(|s| (s.txn.card.as_str(), s.txn.program.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    tx.lock(&keys)?;
    batch.iter().map(|s| apply_one(tx, s)).collect()
}

/// Judges one transaction, and keeps the list of held ones: a transaction from a device is
/// on it while held, and off it once judged otherwise.
fn apply_one<T: LedgerTx + ?Sized>(tx: &mut T, s: &Submitted) -> Result<Outcome, LedgerError> {
    let (txn, device) = (&s.txn, s.device.as_deref());
    let outcome = judge_one(tx, txn, device, s.admin)?;
    if let Some(device) = device {
        let tx_id = txn.tx_id.as_str();
        if outcome.status == Status::Held {
            tx.hold(tx_id, device, &Timestamp::now().to_string())?;
        } else {
            tx.unhold(tx_id)?;
        }
    }
    Ok(outcome)
}

fn judge_one<T: LedgerTx + ?Sized>(
    tx: &mut T,
    txn: &Txn,
    device: Option<&str>,
    admin: bool,
) -> Result<Outcome, LedgerError> {
    let outcome = |status, reason| Outcome {
        tx_id: txn.tx_id.to_string(),
        status,
        reason,
    };
    let rejected = |reason| Ok(outcome(Status::Rejected, Some(reason)));
    if txn.validate().is_err() {
        return rejected("invalid");
    }
    if let Some(device) = device {
        match admit(tx, txn, device)? {
            Admit::Yes => {}
            Admit::Hold => return Ok(outcome(Status::Held, Some("unregistered_device"))),
            Admit::No(reason) => return rejected(reason),
        }
    }
    // The balance was locked for the batch, so two writers of one card and program take
    // turns, and the second sees what the first did.
    let balance = tx.balance(&txn.card, &txn.program)?;
    let content = serde_json::to_string(txn).map_err(|e| LedgerError::Row(e.to_string()))?;
    if let Some(earlier) = tx.content(txn.tx_id.as_str())? {
        return if earlier == content {
            Ok(outcome(Status::Duplicate, None))
        } else {
            rejected("conflict")
        };
    }
    // A store that is no record yet is one a person has still to set up: held, like a
    // till not registered yet, and judged again when sent again.
    if !tx.store_known(&txn.store)? {
        return Ok(outcome(Status::Held, Some("unknown_store")));
    }
    // An admin may still undo what a blocked card did; nothing else moves it.
    let admin_reversal = txn.op == TxnOp::Reverse && admin && device.is_none();
    if !admin_reversal && tx.card_blocked(&txn.card)? {
        return rejected("card_blocked");
    }
    let Some(body) = tx.program(&txn.program)? else {
        return rejected("unknown_program");
    };
    let program: Program =
        serde_json::from_str(&body).map_err(|e| LedgerError::Row(e.to_string()))?;
    // `validate` bounds qty and amounts, and every step below is checked as well: a result
    // out of range is a rejection, never a wrap or a panic.
    let qty = txn.qty.unwrap_or(0);
    let delta = match (txn.op, &program) {
        (TxnOp::Stamp, Program::Stamps { .. }) => i64::try_from(qty).ok(),
        (TxnOp::Earn, Program::Points { .. }) => match txn.qty {
            Some(points) => i64::try_from(points).ok(),
            None => program.points_for(txn.amount_minor.unwrap_or(0)),
        },
        (TxnOp::Stamp, _) | (TxnOp::Earn, _) => return rejected("wrong_program_kind"),
        (TxnOp::Redeem, _) => {
            let Some(cost) = rules::redemption_cost(qty, program.reward_cost()) else {
                return rejected("out_of_range");
            };
            // Offline, the goods are gone already: apply, and let the balance go negative.
            if balance < cost && !txn.offline {
                return rejected("insufficient_balance");
            }
            cost.checked_neg()
        }
        (TxnOp::Reverse, _) => {
            let reversed = txn
                .reverses
                .as_ref()
                .map(|r| r.as_str())
                .unwrap_or_default();
            match tx.target(reversed)? {
                None => return rejected("unknown_reversed"),
                Some(t) if t.card != txn.card || t.program != txn.program => {
                    return rejected("reversal_mismatch");
                }
                Some(Target {
                    reversed_by: Some(_),
                    ..
                }) => return rejected("already_reversed"),
                // A device's transaction is the device's, whoever relays it: an admin's
                // token in the router does not widen what a till may reverse.
                // A transfer moved a balance between two cards: undoing one side alone
                // would count it twice. Its system entries have no store.
                Some(t) if t.store.is_empty() && is_transfer(reversed) => {
                    return rejected("transfer_entry");
                }
                Some(t) if (device.is_some() || !admin) && t.store.is_empty() => {
                    return rejected("system_entry");
                }
                Some(t) if (device.is_some() || !admin) && t.store != txn.store => {
                    return rejected("reversal_other_store");
                }
                Some(t) => match t.delta.checked_neg() {
                    Some(undo) if rules::next_balance(balance, undo).is_some() => {
                        tx.mark_reversed(reversed, txn.tx_id.as_str())?;
                        Some(undo)
                    }
                    _ => return rejected("out_of_range"),
                },
            }
        }
    };
    let Some((delta, next)) =
        delta.and_then(|d| rules::next_balance(balance, d).map(|next| (d, next)))
    else {
        return rejected("out_of_range");
    };
    let at = Timestamp::now().to_string();
    tx.set_balance(&txn.card, &txn.program, next, &at)?;
    tx.record(&Entry {
        tx_id: txn.tx_id.as_str(),
        content: &content,
        card: &txn.card,
        program: &txn.program,
        store: &txn.store,
        op: op_name(txn.op),
        delta,
        offline: txn.offline,
        at: &at,
    })?;
    Ok(outcome(Status::Applied, None))
}

/// Whether `tx_id` names one side of a replace or merge (`lifecycle::hand_over`).
fn is_transfer(tx_id: &str) -> bool {
    tx_id.starts_with("replace:") || tx_id.starts_with("merge:")
}

enum Admit {
    Yes,
    /// Not registered (yet): the router keeps it queued and sends it again.
    Hold,
    No(&'static str),
}

/// Whether `device` may send `txn`: a registered, active till, at the transaction's store,
/// under its own `tx_id` prefix.
fn admit<T: LedgerTx + ?Sized>(tx: &mut T, txn: &Txn, device: &str) -> Result<Admit, LedgerError> {
    let Some(reg) = tx.registration(device)? else {
        return Ok(Admit::Hold);
    };
    Ok(if reg.retired {
        Admit::No("retired_device")
    } else if reg.kind != "till" {
        Admit::No("not_a_till")
    } else if reg.store.as_deref() != Some(txn.store.as_str()) {
        Admit::No("store_mismatch")
    } else if !txn
        .tx_id
        .as_str()
        .strip_prefix(device)
        .is_some_and(|rest| rest.starts_with(':'))
    {
        Admit::No("foreign_tx_id")
    } else {
        Admit::Yes
    })
}

/// Lets the card's points earned before `cutoff` lapse, as far as they were not spent:
/// spending takes the oldest points first, so what was earned before the cutoff and is
/// still unspent is what was earned before it less everything spent or lapsed so far.
/// Recorded as an `expire` entry, so the ledger still explains the balance; returns the
/// points that lapsed.
pub fn lapse<T: LedgerTx + ?Sized>(
    tx: &mut T,
    card: &str,
    program: &str,
    cutoff: &str,
) -> Result<i64, LedgerError> {
    tx.lock(&[(card, program)])?;
    let balance = tx.balance(card, program)?;
    let unspent = tx.earned_before(card, program, cutoff)? - tx.spent(card, program)?;
    let points = unspent.min(balance);
    if points <= 0 {
        return Ok(0);
    }
    let at = Timestamp::now().to_string();
    let tx_id = format!("expire:{}", ulid::Ulid::new());
    let content = serde_json::json!({
        "op": "expire", "card": card, "program": program, "points": points,
        "earned_before": cutoff,
    })
    .to_string();
    tx.set_balance(card, program, balance - points, &at)?;
    tx.record(&Entry {
        tx_id: &tx_id,
        content: &content,
        card,
        program,
        store: "",
        op: "expire",
        delta: -points,
        offline: false,
        at: &at,
    })?;
    Ok(points)
}
