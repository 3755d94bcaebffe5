//! One database connection, SQLite or PostgreSQL, opened and checked the same way for the
//! ledger and the hot store; and, for the hot store, one small interface over both, so its
//! SQL is written once. The SQL uses `$1`, `$2`... in order of first use: PostgreSQL
//! numbers them, and SQLite binds such names in the order they first appear.
//!
//! Values cross as [`Val`]: integers, reals, text or null. Columns are declared `BIGINT`,
//! `DOUBLE PRECISION` and `TEXT` in both schemas, and aggregates are `CAST` back to them, so
//! both databases answer in the same four types.

use std::time::Duration;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("journal_mode reads back {0:?}, not \"wal\"")]
    NotWal(String),
    #[error("the database URL must be sqlite:///PATH or postgres://..., not {0:?}")]
    Url(String),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Val {
    pub fn int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Real(f) => Some(*f as i64),
            _ => None,
        }
    }

    pub fn real(&self) -> Option<f64> {
        match self {
            Self::Real(f) => Some(*f),
            Self::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Self {
        Self::Real(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Null => ValueRef::Null,
            Self::Int(i) => ValueRef::Integer(*i),
            Self::Real(f) => ValueRef::Real(*f),
            Self::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Self::Null => Ok(IsNull::Yes),
            Self::Int(i) => i.to_sql(ty, out),
            Self::Real(f) => f.to_sql(ty, out),
            Self::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8 | Type::FLOAT8 | Type::TEXT | Type::VARCHAR | Type::BOOL
        )
    }

    to_sql_checked!();
}

/// Reads any of the column types the schemas use.
impl<'a> FromSql<'a> for Val {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Self::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Self::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::FLOAT8 => Self::Real(f64::from_sql(ty, raw)?),
            Type::BOOL => Self::Int(i64::from(bool::from_sql(ty, raw)?)),
            _ => Self::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self::Null)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8 | Type::INT4 | Type::FLOAT8 | Type::BOOL | Type::TEXT | Type::VARCHAR
        )
    }
}

pub type Row = Vec<Val>;

pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

/// Statements of one transaction, whichever the database.
pub enum Tx<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(postgres::Transaction<'a>),
}

impl Db {
    /// `sqlite:///PATH` (or a plain path) or `postgres://...`, with `schemas` (SQLite's,
    /// PostgreSQL's) applied; both must be idempotent. SQLite runs in WAL (read back) with
    /// `synchronous=FULL`.
    pub fn open(url: &str, schemas: (&str, &str)) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut client = postgres::Client::connect(url, postgres::NoTls)?;
            // Several processes may start at once; one migrates at a time.
            client.batch_execute("SELECT pg_advisory_lock(7152001)")?;
            let migrated = client.batch_execute(schemas.1);
            client.batch_execute("SELECT pg_advisory_unlock(7152001)")?;
            migrated?;
            return Ok(Self::Postgres(client));
        }
        let path = match url.strip_prefix("sqlite://") {
            Some(path) => path,
            None if url.contains("://") => return Err(DbError::Url(url.into())),
            None => url,
        };
        if let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            ferry_shared::durable_dir::create_dir_all(dir)
                .map_err(|e| DbError::Other(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::NotWal(mode));
        }
        // FULL: a committed transaction is acknowledged (the ledger) or forgotten upstream
        // (the ingest's journal, once the hot store has it).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(schemas.0)?;
        Ok(Self::Sqlite(conn))
    }

    /// False once a PostgreSQL connection has closed.
    pub fn is_usable(&self) -> bool {
        match self {
            Self::Sqlite(_) => true,
            Self::Postgres(c) => !c.is_closed(),
        }
    }

    pub fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
        match self {
            Self::Sqlite(c) => sqlite_query(c, sql, params),
            Self::Postgres(c) => pg_query(c, sql, params),
        }
    }

    pub fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError> {
        match self {
            Self::Sqlite(c) => Ok(c.prepare_cached(sql)?.execute(params_of(params))? as u64),
            Self::Postgres(c) => Ok(c.execute(sql, &pg_params(params))?),
        }
    }

    /// Runs `work` in one transaction and commits it.
    pub fn transaction<T>(
        &mut self,
        work: impl FnOnce(&mut Tx<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        match self {
            Self::Sqlite(c) => {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut tx = Tx::Sqlite(tx);
                let out = work(&mut tx)?;
                tx.commit()?;
                Ok(out)
            }
            Self::Postgres(c) => {
                let mut tx = Tx::Postgres(c.transaction()?);
                let out = work(&mut tx)?;
                tx.commit()?;
                Ok(out)
            }
        }
    }
}

impl Tx<'_> {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    pub fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
        match self {
            Self::Sqlite(c) => sqlite_query(c, sql, params),
            Self::Postgres(c) => Ok(c
                .query(sql, &pg_params(params))?
                .into_iter()
                .map(|r| pg_row(&r))
                .collect::<Result<_, _>>()?),
        }
    }

    /// Rows changed.
    pub fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, DbError> {
        match self {
            Self::Sqlite(c) => Ok(c.prepare_cached(sql)?.execute(params_of(params))? as u64),
            Self::Postgres(c) => Ok(c.execute(sql, &pg_params(params))?),
        }
    }

    /// Runs `sql` with `rows` passed as one array per column: `sql` names them `$ARRAYS`
    /// (as in `SELECT * FROM unnest($ARRAYS)`). PostgreSQL only: one statement whatever the
    /// row count, where multi-row `VALUES` is bounded by the protocol's 65,535 parameters
    /// and makes the server parse a new text each time. Each column's type is its first
    /// non-null value's; a column of nulls alone goes as `text[]`, which only a text
    /// column takes.
    pub fn query_unnest(&mut self, sql: &str, rows: &[Row]) -> Result<Vec<Row>, DbError> {
        let Self::Postgres(c) = self else {
            return Err(DbError::Other("query_unnest needs PostgreSQL".into()));
        };
        let Some(width) = rows.first().map(Vec::len) else {
            return Ok(Vec::new());
        };
        let columns = (0..width)
            .map(|i| Column::of(rows, i))
            .collect::<Result<Vec<_>, _>>()?;
        let arrays: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}[]", i + 1, c.sql_type()))
            .collect();
        let sql = sql.replace("$ARRAYS", &arrays.join(", "));
        let params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(Column::param).collect();
        c.query(&sql, &params)?
            .into_iter()
            .map(|r| pg_row(&r))
            .collect()
    }

    /// `COPY table (columns) FROM STDIN` of `rows` in PostgreSQL's binary format, whose
    /// columns have `types`: the cheapest way in, for rows known to be new. PostgreSQL only.
    pub fn copy_in(&mut self, target: &str, types: &[Type], rows: &[Row]) -> Result<(), DbError> {
        let Self::Postgres(c) = self else {
            return Err(DbError::Other("copy_in needs PostgreSQL".into()));
        };
        let sink = c.copy_in(&format!("COPY {target} FROM STDIN (FORMAT binary)"))?;
        let mut writer = BinaryCopyInWriter::new(sink, types);
        for row in rows {
            writer.write(&pg_params(row))?;
        }
        writer.finish()?;
        Ok(())
    }

    fn commit(self) -> Result<(), DbError> {
        match self {
            Self::Sqlite(tx) => tx.commit()?,
            Self::Postgres(tx) => tx.commit()?,
        }
        Ok(())
    }
}

/// One column of rows, as a PostgreSQL array.
enum Column<'a> {
    Int(Vec<Option<i64>>),
    Real(Vec<Option<f64>>),
    Text(Vec<Option<&'a str>>),
}

impl<'a> Column<'a> {
    fn of(rows: &'a [Row], i: usize) -> Result<Self, DbError> {
        let first = rows
            .iter()
            .map(|r| r.get(i))
            .find(|v| !matches!(v, Some(Val::Null)));
        let mismatch = || DbError::Other(format!("column {} mixes types", i + 1));
        let cells = || rows.iter().map(move |r| r.get(i).unwrap_or(&Val::Null));
        Ok(match first.flatten() {
            Some(Val::Int(_)) => Self::Int(
                cells()
                    .map(|v| match v {
                        Val::Null => Ok(None),
                        Val::Int(n) => Ok(Some(*n)),
                        _ => Err(mismatch()),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(Val::Real(_)) => Self::Real(
                cells()
                    .map(|v| match v {
                        Val::Null => Ok(None),
                        other => other.real().map(Some).ok_or_else(mismatch),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => Self::Text(
                cells()
                    .map(|v| match v {
                        Val::Null => Ok(None),
                        other => other.text().map(Some).ok_or_else(mismatch),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn sql_type(&self) -> &'static str {
        match self {
            Self::Int(_) => "bigint",
            Self::Real(_) => "double precision",
            Self::Text(_) => "text",
        }
    }

    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Int(v) => v,
            Self::Real(v) => v,
            Self::Text(v) => v,
        }
    }
}

fn params_of(params: &[Val]) -> rusqlite::ParamsFromIter<std::slice::Iter<'_, Val>> {
    rusqlite::params_from_iter(params.iter())
}

fn pg_params(params: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn sqlite_query(c: &rusqlite::Connection, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
    let mut stmt = c.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let rows = stmt.query_map(params_of(params), |r| {
        (0..columns)
            .map(|i| {
                use rusqlite::types::ValueRef;
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(i) => Val::Int(i),
                    ValueRef::Real(f) => Val::Real(f),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Val::Text(String::from_utf8_lossy(t).into_owned())
                    }
                })
            })
            .collect::<rusqlite::Result<Row>>()
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn pg_query(c: &mut postgres::Client, sql: &str, params: &[Val]) -> Result<Vec<Row>, DbError> {
    c.query(sql, &pg_params(params))?
        .into_iter()
        .map(|r| pg_row(&r))
        .collect()
}

fn pg_row(r: &postgres::Row) -> Result<Row, DbError> {
    (0..r.len())
        .map(|i| r.try_get::<_, Val>(i).map_err(DbError::from))
        .collect()
}
