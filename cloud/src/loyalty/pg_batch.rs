//! A batch applied on PostgreSQL in a fixed handful of round trips, whatever its size.
//!
//! The rules (`apply`) ask their questions one transaction at a time; one statement per
//! question made PostgreSQL round-trip bound, about seven per stamp. Here `lock` takes the
//! batch's locks in one statement and then reads everything the batch can ask about in
//! four set-based queries, so nothing read can change under it; the rules' questions are
//! answered from those rows and from the batch's own writes, which are kept in order and
//! written at `flush` with one `UNNEST` statement per table. The rules stay in one place
//! and the outcome of every transaction is the same as on the one-statement path: that is
//! what the conformance suite runs on both.

use std::collections::{HashMap, HashSet};

use postgres::{Client, Statement, Transaction};

use super::LedgerError;
use super::Outcome;
use super::apply::{Entry, LedgerTx, Registered, Rows, Submitted, Target};

/// The set-based statements, prepared once per connection.
pub struct Statements {
    lock: Statement,
    ledger_rows: Statement,
    programs: Statement,
    balances: Statement,
    devices: Statement,
    org: Statement,
    insert_cards: Statement,
    upsert_balances: Statement,
    insert_ledger: Statement,
    mark_reversed: Statement,
    insert_held: Statement,
    delete_held: Statement,
}

impl Statements {
    pub fn prepare(c: &mut Client) -> Result<Self, LedgerError> {
        Ok(Self {
            // Volatile functions in a select list run after its ORDER BY: the locks are
            // taken in the order given, which is the one global order of all writers.
            lock: c.prepare(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))
                 FROM unnest($1::text[]) WITH ORDINALITY AS u(k, i) ORDER BY i",
            )?,
            // The lookups by key are LATERAL with LIMIT 1 (the keys are unique) so that they
            // stay one index probe per key: as a plain join or `= ANY`, PostgreSQL hashes or
            // scans the whole table whenever it guesses that is cheaper, which it does for a
            // young table and which then costs a scan of the ledger per batch.
            ledger_rows: c.prepare(
                "SELECT l.tx_id, l.content, l.delta, l.card, l.program, l.reversed_by, l.store
                 FROM unnest($1::text[]) AS k(tx_id)
                 CROSS JOIN LATERAL (SELECT * FROM ledger WHERE tx_id = k.tx_id LIMIT 1) l",
            )?,
            programs: c.prepare(
                "SELECT p.id, p.body FROM unnest($1::text[]) AS k(id)
                 CROSS JOIN LATERAL (SELECT * FROM programs WHERE id = k.id LIMIT 1) p",
            )?,
            balances: c.prepare(
                "SELECT b.card, b.program, b.balance
                 FROM unnest($1::text[], $2::text[]) AS k(card, program)
                 CROSS JOIN LATERAL (SELECT * FROM balances
                                     WHERE card = k.card AND program = k.program LIMIT 1) b",
            )?,
            devices: c.prepare(
                "SELECT d.id, d.kind, d.store, d.retired_at FROM unnest($1::text[]) AS k(id)
                 CROSS JOIN LATERAL (SELECT * FROM devices WHERE id = k.id LIMIT 1) d",
            )?,
            // The stores and the blocked cards the batch names, in one round trip.
            org: c.prepare(
                "SELECT 'store', s.id FROM unnest($1::text[]) AS k(id)
                 CROSS JOIN LATERAL (SELECT id FROM stores WHERE id = k.id LIMIT 1) s
                 UNION ALL
                 SELECT 'card', b.card FROM unnest($2::text[]) AS k(card)
                 CROSS JOIN LATERAL (SELECT card FROM card_blocks WHERE card = k.card
                                     LIMIT 1) b",
            )?,
            insert_cards: c.prepare(
                "INSERT INTO cards (card, created_at)
                 SELECT * FROM unnest($1::text[], $2::text[])
                 ON CONFLICT (card) DO NOTHING",
            )?,
            upsert_balances: c.prepare(
                "INSERT INTO balances (card, program, balance, flagged)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bool[])
                 ON CONFLICT (card, program) DO UPDATE SET balance = excluded.balance,
                     flagged = balances.flagged OR excluded.flagged",
            )?,
            // In the batch's order, so ledger seqs follow it as on the one-statement path.
            insert_ledger: c.prepare(
                "INSERT INTO ledger (tx_id, content, card, program, store, op, delta, offline,
                                     applied_at, reversed_by)
                 SELECT tx_id, content, card, program, store, op, delta, offline, applied_at,
                        reversed_by
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::bigint[], $8::bool[], $9::text[], $10::text[])
                      WITH ORDINALITY AS u(tx_id, content, card, program, store, op, delta,
                                           offline, applied_at, reversed_by, i)
                 ORDER BY i",
            )?,
            mark_reversed: c.prepare(
                "UPDATE ledger SET reversed_by = u.by
                 FROM unnest($1::text[], $2::text[]) AS u(tx_id, by)
                 WHERE ledger.tx_id = u.tx_id",
            )?,
            insert_held: c.prepare(
                "INSERT INTO held (tx_id, device, held_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                 ON CONFLICT (tx_id) DO NOTHING",
            )?,
            delete_held: c.prepare("DELETE FROM held WHERE tx_id = ANY($1::text[])")?,
        })
    }
}

/// An applied transaction, as read or as written by this batch.
#[derive(Debug, Clone)]
struct LedgerRow {
    content: String,
    delta: i64,
    card: String,
    program: String,
    reversed_by: Option<String>,
    store: String,
}

/// A ledger row this batch writes.
struct NewEntry {
    tx_id: String,
    row: LedgerRow,
    op: &'static str,
    offline: bool,
    at: String,
}

/// The rules' view of one PostgreSQL transaction for one batch: [`LedgerTx`] over rows read
/// at `lock` and writes held until [`PgBatch::flush`].
pub struct PgBatch<'a, 'c> {
    tx: &'a mut Transaction<'c>,
    st: &'a Statements,
    /// Ids the batch names: its own and the ones its reversals name.
    tx_ids: Vec<&'a str>,
    programs_named: Vec<&'a str>,
    devices_named: Vec<&'a str>,
    stores_named: Vec<&'a str>,

    ledger: HashMap<String, LedgerRow>,
    programs: HashMap<String, String>,
    balances: HashMap<(String, String), i64>,
    devices: HashMap<String, Registered>,
    stores: HashSet<String>,
    blocked: HashSet<String>,

    cards: Vec<(String, String)>,
    cards_seen: HashSet<String>,
    /// Final balance per key, and whether it went below zero on the way.
    new_balances: Vec<((String, String), i64, bool)>,
    balance_slot: HashMap<(String, String), usize>,
    entries: Vec<NewEntry>,
    entry_slot: HashMap<String, usize>,
    /// Rows committed before this batch that a reversal in it marks: (tx_id, by).
    reversed: Vec<(String, String)>,
    /// The held list's final word per transaction: held (device, at) or not.
    held: HashMap<String, Option<(String, String)>>,
}

impl<'a, 'c> PgBatch<'a, 'c> {
    pub fn new(tx: &'a mut Transaction<'c>, st: &'a Statements, batch: &'a [Submitted]) -> Self {
        let mut tx_ids: Vec<&str> = batch.iter().map(|s| s.txn.tx_id.as_str()).collect();
        tx_ids.extend(
            batch
                .iter()
                .filter_map(|s| s.txn.reverses.as_ref())
                .map(|r| r.as_str()),
        );
        let mut programs_named: Vec<&str> = batch.iter().map(|s| s.txn.program.as_str()).collect();
        let mut devices_named: Vec<&str> =
            batch.iter().filter_map(|s| s.device.as_deref()).collect();
        let mut stores_named: Vec<&str> = batch.iter().map(|s| s.txn.store.as_str()).collect();
        for v in [
            &mut tx_ids,
            &mut programs_named,
            &mut devices_named,
            &mut stores_named,
        ] {
            v.sort_unstable();
            v.dedup();
        }
        Self {
            tx,
            st,
            tx_ids,
            programs_named,
            devices_named,
            stores_named,
            ledger: HashMap::new(),
            programs: HashMap::new(),
            balances: HashMap::new(),
            devices: HashMap::new(),
            stores: HashSet::new(),
            blocked: HashSet::new(),
            cards: Vec::new(),
            cards_seen: HashSet::new(),
            new_balances: Vec::new(),
            balance_slot: HashMap::new(),
            entries: Vec::new(),
            entry_slot: HashMap::new(),
            reversed: Vec::new(),
            held: HashMap::new(),
        }
    }

    /// Writes what the batch did: at most seven statements, none for a table it left alone.
    pub fn flush(self) -> Result<(), LedgerError> {
        let Self {
            tx,
            st,
            cards,
            new_balances,
            entries,
            reversed,
            held,
            ..
        } = self;
        if !cards.is_empty() {
            let (card, at): (Vec<&str>, Vec<&str>) =
                cards.iter().map(|(c, a)| (c.as_str(), a.as_str())).unzip();
            tx.execute(&st.insert_cards, &[&card, &at])?;
        }
        if !new_balances.is_empty() {
            let card: Vec<&str> = new_balances.iter().map(|(k, ..)| k.0.as_str()).collect();
            let program: Vec<&str> = new_balances.iter().map(|(k, ..)| k.1.as_str()).collect();
            let balance: Vec<i64> = new_balances.iter().map(|&(_, b, _)| b).collect();
            let flagged: Vec<bool> = new_balances.iter().map(|&(.., f)| f).collect();
            tx.execute(&st.upsert_balances, &[&card, &program, &balance, &flagged])?;
        }
        if !entries.is_empty() {
            let text = |f: fn(&NewEntry) -> &str| entries.iter().map(f).collect::<Vec<&str>>();
            let delta: Vec<i64> = entries.iter().map(|e| e.row.delta).collect();
            let offline: Vec<bool> = entries.iter().map(|e| e.offline).collect();
            let reversed_by: Vec<Option<&str>> = entries
                .iter()
                .map(|e| e.row.reversed_by.as_deref())
                .collect();
            tx.execute(
                &st.insert_ledger,
                &[
                    &text(|e| &e.tx_id),
                    &text(|e| &e.row.content),
                    &text(|e| &e.row.card),
                    &text(|e| &e.row.program),
                    &text(|e| &e.row.store),
                    &text(|e| e.op),
                    &delta,
                    &offline,
                    &text(|e| &e.at),
                    &reversed_by,
                ],
            )?;
        }
        if !reversed.is_empty() {
            let (tx_id, by): (Vec<&str>, Vec<&str>) = reversed
                .iter()
                .map(|(t, b)| (t.as_str(), b.as_str()))
                .unzip();
            tx.execute(&st.mark_reversed, &[&tx_id, &by])?;
        }
        let (mut hold, mut unhold) = (Vec::new(), Vec::new());
        for (tx_id, state) in &held {
            match state {
                Some((device, at)) => hold.push((tx_id.as_str(), device.as_str(), at.as_str())),
                None => unhold.push(tx_id.as_str()),
            }
        }
        if !hold.is_empty() {
            let tx_id: Vec<&str> = hold.iter().map(|h| h.0).collect();
            let device: Vec<&str> = hold.iter().map(|h| h.1).collect();
            let at: Vec<&str> = hold.iter().map(|h| h.2).collect();
            tx.execute(&st.insert_held, &[&tx_id, &device, &at])?;
        }
        if !unhold.is_empty() {
            tx.execute(&st.delete_held, &[&unhold])?;
        }
        Ok(())
    }

    /// Everything the batch can ask about, read under its locks.
    fn read(&mut self, keys: &[(&str, &str)]) -> Result<(), LedgerError> {
        for r in self.tx.query(&self.st.ledger_rows, &[&self.tx_ids])? {
            let row = LedgerRow {
                content: r.get(1),
                delta: r.get(2),
                card: r.get(3),
                program: r.get(4),
                reversed_by: r.get(5),
                store: r.get(6),
            };
            self.ledger.insert(r.get(0), row);
        }
        for r in self.tx.query(&self.st.programs, &[&self.programs_named])? {
            self.programs.insert(r.get(0), r.get(1));
        }
        let cards: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let programs: Vec<&str> = keys.iter().map(|k| k.1).collect();
        for r in self.tx.query(&self.st.balances, &[&cards, &programs])? {
            self.balances.insert((r.get(0), r.get(1)), r.get(2));
        }
        let mut named_cards = cards.clone();
        named_cards.dedup();
        for r in self
            .tx
            .query(&self.st.org, &[&self.stores_named, &named_cards])?
        {
            let (what, id): (&str, String) = (r.get(0), r.get(1));
            match what {
                "store" => self.stores.insert(id),
                _ => self.blocked.insert(id),
            };
        }
        if !self.devices_named.is_empty() {
            for r in self.tx.query(&self.st.devices, &[&self.devices_named])? {
                let registered = Registered {
                    kind: r.get(1),
                    store: r.get(2),
                    retired: r.get::<_, Option<String>>(3).is_some(),
                };
                self.devices.insert(r.get(0), registered);
            }
        }
        Ok(())
    }
}

/// What a batch cannot be asked: the rules for a batch never do.
fn not_in_a_batch(what: &str) -> LedgerError {
    LedgerError::Row(format!("{what} is not part of applying a batch"))
}

/// Takes the advisory locks of `keys`, in the order given, in one statement.
pub fn lock(
    tx: &mut Transaction<'_>,
    st: &Statements,
    keys: &[(&str, &str)],
) -> Result<(), LedgerError> {
    let keys: Vec<String> = keys
        .iter()
        .map(|(card, program)| format!("{card}\u{1f}{program}"))
        .collect();
    tx.execute(&st.lock, &[&keys])?;
    Ok(())
}

impl LedgerTx for PgBatch<'_, '_> {
    fn lock(&mut self, keys: &[(&str, &str)]) -> Result<(), LedgerError> {
        lock(self.tx, self.st, keys)?;
        self.read(keys)
    }

    fn content(&mut self, tx_id: &str) -> Result<Option<String>, LedgerError> {
        Ok(self.ledger.get(tx_id).map(|r| r.content.clone()))
    }

    fn program(&mut self, id: &str) -> Result<Option<String>, LedgerError> {
        Ok(self.programs.get(id).cloned())
    }

    fn balance(&mut self, card: &str, program: &str) -> Result<i64, LedgerError> {
        Ok(self
            .balances
            .get(&(card.to_owned(), program.to_owned()))
            .copied()
            .unwrap_or(0))
    }

    fn target(&mut self, tx_id: &str) -> Result<Option<Target>, LedgerError> {
        Ok(self.ledger.get(tx_id).map(|r| Target {
            delta: r.delta,
            card: r.card.clone(),
            program: r.program.clone(),
            reversed_by: r.reversed_by.clone(),
            store: r.store.clone(),
        }))
    }

    fn registration(&mut self, device: &str) -> Result<Option<Registered>, LedgerError> {
        Ok(self.devices.get(device).cloned())
    }

    fn exec_text(&mut self, _sql: &str, _params: &[&str]) -> Result<(), LedgerError> {
        Err(not_in_a_batch("a free statement"))
    }

    fn texts(&mut self, _sql: &str, _params: &[&str]) -> Result<Rows, LedgerError> {
        Err(not_in_a_batch("a free query"))
    }

    fn store_known(&mut self, store: &str) -> Result<bool, LedgerError> {
        Ok(self.stores.contains(store))
    }

    fn card_blocked(&mut self, card: &str) -> Result<bool, LedgerError> {
        Ok(self.blocked.contains(card))
    }

    fn hold(&mut self, tx_id: &str, device: &str, at: &str) -> Result<(), LedgerError> {
        self.held
            .insert(tx_id.to_owned(), Some((device.to_owned(), at.to_owned())));
        Ok(())
    }

    fn unhold(&mut self, tx_id: &str) -> Result<(), LedgerError> {
        self.held.insert(tx_id.to_owned(), None);
        Ok(())
    }

    fn mark_reversed(&mut self, tx_id: &str, by: &str) -> Result<(), LedgerError> {
        if let Some(row) = self.ledger.get_mut(tx_id) {
            row.reversed_by = Some(by.to_owned());
        }
        match self.entry_slot.get(tx_id) {
            Some(&i) => self.entries[i].row.reversed_by = Some(by.to_owned()),
            None => self.reversed.push((tx_id.to_owned(), by.to_owned())),
        }
        Ok(())
    }

    fn set_balance(
        &mut self,
        card: &str,
        program: &str,
        balance: i64,
        now: &str,
    ) -> Result<(), LedgerError> {
        let key = (card.to_owned(), program.to_owned());
        if self.cards_seen.insert(card.to_owned()) {
            self.cards.push((card.to_owned(), now.to_owned()));
        }
        match self.balance_slot.get(&key) {
            Some(&i) => {
                let slot = &mut self.new_balances[i];
                slot.1 = balance;
                slot.2 |= balance < 0;
            }
            None => {
                self.balance_slot
                    .insert(key.clone(), self.new_balances.len());
                self.new_balances.push((key.clone(), balance, balance < 0));
            }
        }
        self.balances.insert(key, balance);
        Ok(())
    }

    fn record(&mut self, e: &Entry<'_>) -> Result<(), LedgerError> {
        let row = LedgerRow {
            content: e.content.to_owned(),
            delta: e.delta,
            card: e.card.to_owned(),
            program: e.program.to_owned(),
            reversed_by: None,
            store: e.store.to_owned(),
        };
        self.ledger.insert(e.tx_id.to_owned(), row.clone());
        self.entry_slot
            .insert(e.tx_id.to_owned(), self.entries.len());
        self.entries.push(NewEntry {
            tx_id: e.tx_id.to_owned(),
            row,
            op: e.op,
            offline: e.offline,
            at: e.at.to_owned(),
        });
        Ok(())
    }

    fn earned_before(&mut self, _: &str, _: &str, _: &str) -> Result<i64, LedgerError> {
        Err(not_in_a_batch("expiry"))
    }

    fn spent(&mut self, _: &str, _: &str) -> Result<i64, LedgerError> {
        Err(not_in_a_batch("expiry"))
    }

    fn apply_batch(&mut self, _batch: &[Submitted]) -> Result<Vec<Outcome>, LedgerError> {
        Err(not_in_a_batch("a batch within a batch"))
    }
}
