//! A card's life after its first stamp (README: card lifecycle): block and unblock, replace
//! (a new card takes the balances), merge (another card takes them), and the review that
//! clears a flag. Each is a function of a [`LedgerTx`], so the API runs it and its audit row
//! in one database transaction.
//!
//! Balances move as `transfer` entries, one out of the old card and one into the other per
//! program, so both cards' ledgers still explain their balances and name each other. For
//! expiry, points moved in count as earned when they moved.

use ferry_shared::{CardBlock, Timestamp, rules};
use serde::Serialize;
use serde_json::json;

use super::apply::{Entry, LedgerTx};
use super::{Ledger, LedgerError};

/// What a replace or merge did: the balances moved, per program.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Moved {
    pub from: String,
    pub to: String,
    /// `(program, amount)`, for every program where the old card held something.
    pub moved: Vec<(String, i64)>,
}

/// An entry that took a card below zero, for the person who reviews it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Overdraft {
    pub card: String,
    pub program: String,
    pub tx_id: String,
    pub store: String,
    /// The cashier, when the till said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staff: Option<String>,
    pub offline: bool,
    /// The balance the entry left.
    pub balance_after: i64,
    pub applied_at: String,
}

fn known(tx: &mut dyn LedgerTx, card: &str) -> Result<bool, LedgerError> {
    Ok(!tx
        .texts("SELECT card FROM cards WHERE card = $1", &[card])?
        .is_empty())
}

fn unknown(card: &str) -> LedgerError {
    LedgerError::refused(
        "unknown_card",
        format!("no transaction for card {card:?} yet"),
    )
}

/// The card's block, when it is blocked.
pub fn block_of(tx: &mut dyn LedgerTx, card: &str) -> Result<Option<CardBlock>, LedgerError> {
    let row = tx
        .texts(
            "SELECT reason, successor, blocked_at FROM card_blocks WHERE card = $1",
            &[card],
        )?
        .pop();
    Ok(row.map(|mut r| {
        let mut take = |i: usize| r.get_mut(i).and_then(Option::take);
        CardBlock {
            reason: take(0).unwrap_or_default(),
            successor: take(1),
            blocked_at: take(2).unwrap_or_default(),
        }
    }))
}

fn put_block(
    tx: &mut dyn LedgerTx,
    card: &str,
    reason: &str,
    successor: Option<&str>,
) -> Result<(), LedgerError> {
    let now = Timestamp::now().to_string();
    match successor {
        Some(to) => tx.exec_text(
            "INSERT INTO card_blocks (card, reason, successor, blocked_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (card) DO UPDATE SET reason = excluded.reason,
                 successor = excluded.successor, blocked_at = excluded.blocked_at",
            &[card, reason, to, &now],
        ),
        None => tx.exec_text(
            "INSERT INTO card_blocks (card, reason, blocked_at) VALUES ($1, $2, $3)",
            &[card, reason, &now],
        ),
    }
}

/// Blocks a known card that is not blocked yet.
pub fn block(tx: &mut dyn LedgerTx, card: &str, reason: &str) -> Result<(), LedgerError> {
    if !known(tx, card)? {
        return Err(unknown(card));
    }
    if tx.card_blocked(card)? {
        return Err(LedgerError::refused(
            "already_blocked",
            format!("card {card:?} is blocked already"),
        ));
    }
    put_block(tx, card, reason, None)
}

/// Unblocks a blocked card, unless its balances went to another card.
pub fn unblock(tx: &mut dyn LedgerTx, card: &str) -> Result<(), LedgerError> {
    match block_of(tx, card)? {
        None => Err(LedgerError::refused(
            "not_blocked",
            format!("card {card:?} is not blocked"),
        )),
        Some(CardBlock {
            successor: Some(to),
            ..
        }) => Err(LedgerError::refused(
            "card_replaced",
            format!("card {card:?} gave its balances to {to:?}; it stays blocked"),
        )),
        Some(_) => tx.exec_text("DELETE FROM card_blocks WHERE card = $1", &[card]),
    }
}

/// How a card hands its balances on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// To a card never seen before: the customer's new card.
    Replace,
    /// To a card in use: one customer's two cards become one.
    Merge,
}

impl Handover {
    fn name(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Merge => "merge",
        }
    }
}

/// Moves every balance of `from` to `to` and blocks `from`, pointing at `to`. `programs` are
/// every program's id: each (card, program) of both cards is locked before it is read.
pub fn hand_over(
    tx: &mut dyn LedgerTx,
    programs: &[String],
    from: &str,
    to: &str,
    how: Handover,
    reason: &str,
) -> Result<Moved, LedgerError> {
    if from == to {
        return Err(LedgerError::refused(
            "same_card",
            "a card cannot take its own balances",
        ));
    }
    if !known(tx, from)? {
        return Err(unknown(from));
    }
    if let Some(CardBlock {
        successor: Some(next),
        ..
    }) = block_of(tx, from)?
    {
        return Err(LedgerError::refused(
            "card_replaced",
            format!("card {from:?} gave its balances to {next:?} already"),
        ));
    }
    match (how, known(tx, to)?) {
        (Handover::Replace, true) => {
            return Err(LedgerError::refused(
                "card_in_use",
                format!("card {to:?} has transactions: merge into it instead"),
            ));
        }
        (Handover::Merge, false) => return Err(unknown(to)),
        _ => {}
    }
    if tx.card_blocked(to)? {
        return Err(LedgerError::refused(
            "card_blocked",
            format!("card {to:?} is blocked"),
        ));
    }
    let mut keys: Vec<(&str, &str)> = programs
        .iter()
        .flat_map(|p| [(from, p.as_str()), (to, p.as_str())])
        .collect();
    keys.sort_unstable();
    tx.lock(&keys)?;
    let at = Timestamp::now().to_string();
    let batch = ulid::Ulid::new();
    let mut moved = Vec::new();
    for program in programs {
        let amount = tx.balance(from, program)?;
        if amount == 0 {
            continue;
        }
        let held = tx.balance(to, program)?;
        let Some(next) = rules::next_balance(held, amount) else {
            return Err(LedgerError::refused(
                "out_of_range",
                format!("card {to:?} cannot hold {amount} more in {program:?}"),
            ));
        };
        let content = json!({
            "op": "transfer", "how": how.name(), "from": from, "to": to,
            "program": program, "amount": amount, "reason": reason,
        })
        .to_string();
        tx.set_balance(from, program, 0, &at)?;
        tx.set_balance(to, program, next, &at)?;
        for (card, side, delta) in [(from, "out", -amount), (to, "in", amount)] {
            tx.record(&Entry {
                tx_id: &format!("{}:{batch}:{side}:{program}", how.name()),
                content: &content,
                card,
                program,
                store: "",
                op: "transfer",
                delta,
                offline: false,
                at: &at,
            })?;
        }
        moved.push((program.clone(), amount));
    }
    put_block(tx, from, reason, Some(to))?;
    Ok(Moved {
        from: from.to_owned(),
        to: to.to_owned(),
        moved,
    })
}

/// Clears a flagged card's flags: a person has looked at it. A balance still below zero is
/// flagged again by the next entry that leaves it there.
pub fn review(tx: &mut dyn LedgerTx, card: &str) -> Result<(), LedgerError> {
    // `(1 = 1)` is true in both databases: 1 in SQLite's integers, TRUE in PostgreSQL's
    // booleans.
    let flagged = tx.texts(
        "SELECT program FROM balances WHERE card = $1 AND flagged = (1 = 1)",
        &[card],
    )?;
    if flagged.is_empty() {
        return Err(LedgerError::refused(
            "not_flagged",
            format!("card {card:?} is not flagged"),
        ));
    }
    tx.exec_text(
        "UPDATE balances SET flagged = (1 = 0) WHERE card = $1",
        &[card],
    )
}

impl Ledger {
    /// The card's block, when it is blocked.
    pub fn card_block(&mut self, card: &str) -> Result<Option<CardBlock>, LedgerError> {
        self.in_transaction(|tx| block_of(tx, card))
    }

    /// The entries that took a card's flagged balances below zero, oldest first: walked
    /// from the card's whole ledger, so they always agree with the balance.
    pub fn overdrafts(&mut self, card: &str) -> Result<Vec<Overdraft>, LedgerError> {
        let flagged: Vec<String> = self
            .balances(card)?
            .into_iter()
            .filter(|b| b.flagged)
            .map(|b| b.program)
            .collect();
        let mut running = std::collections::BTreeMap::<String, i64>::new();
        let mut found = Vec::new();
        let mut entries = self.card_entries(card, u32::MAX, None)?;
        entries.reverse();
        for e in entries {
            let balance = running.entry(e.program.clone()).or_default();
            *balance = balance.saturating_add(e.delta);
            if e.delta < 0 && *balance < 0 && flagged.contains(&e.program) {
                found.push(Overdraft {
                    card: card.to_owned(),
                    program: e.program,
                    tx_id: e.tx_id,
                    store: e.store,
                    staff: e.staff,
                    offline: e.offline,
                    balance_after: *balance,
                    applied_at: e.applied_at,
                });
            }
        }
        Ok(found)
    }
}
