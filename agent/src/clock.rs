//! The wall clock's word on when a record happened, and whether to believe it (README:
//! clocks).
//!
//! A Pi has no real-time clock. It boots at the time fake-hwclock saved at shutdown, or in
//! 1970, and NTP steps the clock, often by days, once the link is up. Every record is
//! stamped here, and one stamped while the clock could not be believed is flagged
//! `ts_suspect`: the cloud partitions it by arrival and lets it move no dashboard.
//!
//! The rule: a time before this binary was built is wrong, whatever else says. Past that,
//! the clock is believed once `clock.synced_by` says it is synchronised, and from then on
//! for the life of the process: a time daemon that later loses its servers leaves a clock
//! that drifts by seconds, not one that is days out.
//!
//! Only stamps read the wall clock. Every timer, back-off and pacer runs on the monotonic
//! clock, which a step does not move.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferry_shared::record::Unsequenced;
use ferry_shared::{RecordBody, Timestamp};
use serde::{Deserialize, Serialize};

/// When this binary was built, in Unix seconds (`build.rs`).
const BUILT_AT_S: &str = env!("BUILT_AT_UNIX_S");

/// systemd-timesyncd touches this once it has synchronised the clock, on every boot (the
/// folder is on a tmpfs).
const TIMESYNCD_FLAG: &str = "/run/systemd/timesync/synchronized";

/// While the clock is not believed, its source is asked at most this often: a stat or a
/// syscall per record would cost a Pi at 10,000 records a second.
const RECHECK: Duration = Duration::from_secs(1);

/// `clock.synced_by`: what says the clock has been synchronised.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum SyncedBy {
    /// systemd-timesyncd's flag where timesyncd runs (Raspberry Pi OS, Debian); elsewhere
    /// the build-time floor alone, as nothing on the machine can be asked.
    #[default]
    Auto,
    /// The kernel's NTP state (`adjtimex`), which chrony, ntpd and timesyncd all keep.
    Kernel,
    /// A file that exists once the clock is synchronised.
    File(PathBuf),
    /// The build-time floor alone: a device with a battery-backed clock.
    BuildTime,
}

impl TryFrom<String> for SyncedBy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "kernel" => Ok(Self::Kernel),
            "build_time" => Ok(Self::BuildTime),
            _ => match s.strip_prefix("file:") {
                Some(path) if Path::new(path).is_absolute() => Ok(Self::File(path.into())),
                _ => Err(format!(
                    "{s:?}: expected \"auto\", \"kernel\", \"build_time\" or \"file:/absolute/path\""
                )),
            },
        }
    }
}

impl std::fmt::Display for SyncedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Kernel => f.write_str("kernel"),
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::BuildTime => f.write_str("build_time"),
        }
    }
}

impl SyncedBy {
    fn says_synced(&self) -> bool {
        match self {
            Self::Auto => {
                let flag = Path::new(TIMESYNCD_FLAG);
                match flag.parent() {
                    Some(folder) if folder.is_dir() => flag.exists(),
                    _ => true,
                }
            }
            Self::Kernel => kernel_synced(),
            Self::File(path) => path.exists(),
            Self::BuildTime => true,
        }
    }
}

/// Whether the kernel holds the clock synchronised: `adjtimex` with no modes only reads,
/// needs no privilege, and answers `TIME_ERROR` until a time daemon clears `STA_UNSYNC`.
#[allow(unsafe_code)]
fn kernel_synced() -> bool {
    // SAFETY: `timex` is plain integers, for which all zeroes is a valid value; with
    // `modes` 0 the call only writes into the struct it is given.
    let state = unsafe {
        let mut t: libc::timex = std::mem::zeroed();
        libc::adjtimex(&mut t)
    };
    state >= 0 && state != libc::TIME_ERROR
}

/// What `status` says of the clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClockStatus {
    /// The wall clock is believed (README: clocks).
    pub clock_synced: bool,
    /// `clock.synced_by`.
    pub clock_synced_by: String,
    /// Records this run stamped while the clock was not believed, flagged `ts_suspect`.
    pub ts_suspect_total: u64,
}

struct Source {
    by: SyncedBy,
    asked_at: Option<Instant>,
}

static SOURCE: Mutex<Source> = Mutex::new(Source {
    by: SyncedBy::Auto,
    asked_at: None,
});
static BELIEVED: AtomicBool = AtomicBool::new(false);
static SUSPECT_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Sets what says the clock is synchronised; a change asks the new source afresh.
pub fn configure(by: &SyncedBy) {
    let mut source = SOURCE.lock().unwrap_or_else(PoisonError::into_inner);
    if source.by != *by {
        source.by = by.clone();
        source.asked_at = None;
        BELIEVED.store(false, Ordering::Release);
    }
}

fn built_at_ms() -> i64 {
    BUILT_AT_S
        .parse::<i64>()
        .map_or(0, |s| s.saturating_mul(1000))
}

fn believable(ts: Timestamp) -> bool {
    if ts.unix_millis() < built_at_ms() {
        return false;
    }
    if BELIEVED.load(Ordering::Acquire) {
        return true;
    }
    let mut source = SOURCE.lock().unwrap_or_else(PoisonError::into_inner);
    if source.asked_at.is_some_and(|at| at.elapsed() < RECHECK) {
        return false;
    }
    source.asked_at = Some(Instant::now());
    let synced = source.by.says_synced();
    if synced {
        BELIEVED.store(true, Ordering::Release);
        tracing::info!(synced_by = %source.by, now = %ts, "the clock is synchronised");
    }
    synced
}

/// Now, by the wall clock, and whether that cannot be believed yet.
pub fn stamp() -> (Timestamp, bool) {
    let ts = Timestamp::now();
    (ts, !believable(ts))
}

/// A record of something that happened at a [`stamp`], counted when it is suspect.
pub fn stamped((ts, suspect): (Timestamp, bool), body: RecordBody) -> Unsequenced {
    if suspect {
        SUSPECT_TOTAL.fetch_add(1, Ordering::Relaxed);
    }
    Unsequenced::new(ts, body).suspect(suspect)
}

/// A record of something that happens now.
pub fn record(body: RecordBody) -> Unsequenced {
    stamped(stamp(), body)
}

pub fn status() -> ClockStatus {
    let by = SOURCE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .by
        .to_string();
    ClockStatus {
        clock_synced: BELIEVED.load(Ordering::Acquire)
            && Timestamp::now().unix_millis() >= built_at_ms(),
        clock_synced_by: by,
        ts_suspect_total: SUSPECT_TOTAL.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_by_reads_its_four_forms_and_refuses_the_rest() {
        let parse = |s: &str| SyncedBy::try_from(s.to_owned());
        assert_eq!(parse("auto"), Ok(SyncedBy::Auto));
        assert_eq!(parse("kernel"), Ok(SyncedBy::Kernel));
        assert_eq!(parse("build_time"), Ok(SyncedBy::BuildTime));
        assert_eq!(
            parse("file:/run/ntp-ok"),
            Ok(SyncedBy::File("/run/ntp-ok".into()))
        );
        for bad in ["", "ntp", "file:", "file:relative/path", "Kernel"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            SyncedBy::File("/run/x".into()).to_string(),
            "file:/run/x",
            "status names the source as the config does"
        );
    }

    #[test]
    fn the_build_time_is_the_floor() {
        let built = built_at_ms();
        assert!(
            built > 1_700_000_000_000,
            "build.rs set the build time: {built}"
        );
        assert!(!believable(Timestamp::from_unix_millis(0).expect("1970")));
        assert!(!believable(
            Timestamp::from_unix_millis(built - 1).expect("just before")
        ));
    }
}
