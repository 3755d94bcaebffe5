//! Fetching an artifact: resumable (a `Range` request from what the `.part` file holds),
//! capped at the size its signed manifest declares, retried with backoff; then checked for
//! that size and SHA-256 before anything is installed.

use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use ferry_shared::fleet::Manifest;
use ferry_shared::signing::Sha256;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why a job failed: a stable code for the cloud and a detail for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub detail: String,
}

impl Failure {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Not a failure of the job: the pipeline stopped, and the download resumes at the next start.
pub const STOPPED: &str = "stopped";

const ATTEMPTS: u32 = 6;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A stalled server does not hold a job forever.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Downloads `url` into `part`, resuming what is there. Returns once `part` holds exactly
/// `size` bytes; cancelled with `stop`.
pub async fn fetch(
    url: &str,
    size: u64,
    part: &Path,
    stop: &CancellationToken,
) -> Result<(), Failure> {
    let artifact = Wanted { url, size };
    ferry_shared::tls::use_ring();
    let client = reqwest::Client::builder()
        .read_timeout(READ_TIMEOUT)
        .connect_timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| Failure::new("download_failed", format!("HTTP client: {e}")))?;
    let mut failures = 0;
    let mut stalled = 0;
    loop {
        let before = part_len(part);
        let outcome = tokio::select! {
            outcome = fetch_once(&client, &artifact, part) => outcome,
            _ = stop.cancelled() => return Err(Failure::new(STOPPED, "the agent is stopping")),
        };
        let after = part_len(part);
        match outcome {
            Ok(()) if after == artifact.size => return Ok(()),
            // The server ended the body early and cleanly: try once more from there; a
            // second early end with nothing new is a truncated artifact.
            Ok(()) => {
                stalled = if after > before { 0 } else { stalled + 1 };
                if stalled >= 2 {
                    return Err(Failure::new(
                        "truncated",
                        format!("the server sent {after} of {} bytes", artifact.size),
                    ));
                }
            }
            Err(Attempt::Fatal(f)) => return Err(f),
            Err(Attempt::Retry(detail)) => {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(Failure::new("download_failed", detail));
                }
                let delay = ferry_shared::backoff::jittered(BACKOFF_MIN, BACKOFF_MAX, failures);
                warn!(%detail, retry_in_ms = delay.as_millis() as u64, have = after, "download interrupted");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return Err(Failure::new(STOPPED, "the agent is stopping")),
                }
            }
        }
    }
}

struct Wanted<'a> {
    url: &'a str,
    size: u64,
}

enum Attempt {
    Retry(String),
    Fatal(Failure),
}

fn part_len(part: &Path) -> u64 {
    std::fs::metadata(part).map(|m| m.len()).unwrap_or(0)
}

async fn fetch_once(
    client: &reqwest::Client,
    artifact: &Wanted<'_>,
    part: &Path,
) -> Result<(), Attempt> {
    let have = part_len(part);
    let mut request = client.get(artifact.url);
    if have > 0 {
        request = request.header(RANGE, format!("bytes={have}-"));
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| Attempt::Retry(format!("GET {}: {e}", artifact.url)))?;
    let status = response.status();
    let resumed = match status {
        StatusCode::PARTIAL_CONTENT if resumes_at(&response, have) => true,
        StatusCode::OK => false,
        // Nothing past what we have: the artifact is shorter than declared.
        StatusCode::RANGE_NOT_SATISFIABLE => return Ok(()),
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            return Err(Attempt::Retry(format!("GET {}: {s}", artifact.url)));
        }
        s => {
            return Err(Attempt::Fatal(Failure::new(
                "download_failed",
                format!("GET {}: {s}", artifact.url),
            )));
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(!resumed)
        .open(part)
        .map_err(|e| {
            Attempt::Fatal(Failure::new(
                "download_failed",
                format!("{}: {e}", part.display()),
            ))
        })?;
    let mut written = if resumed {
        file.seek(std::io::SeekFrom::End(0))
            .map_err(|e| Attempt::Retry(e.to_string()))?
    } else {
        0
    };
    if have > 0 && !resumed {
        info!(
            have,
            "the server does not resume; downloading from the start"
        );
    }
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| Attempt::Retry(format!("reading {}: {e}", artifact.url)))?;
        let Some(chunk) = chunk else { break };
        written += chunk.len() as u64;
        if written > artifact.size {
            let _ = std::fs::remove_file(part);
            return Err(Attempt::Fatal(Failure::new(
                "too_large",
                format!(
                    "the server sent more than the declared {} bytes",
                    artifact.size
                ),
            )));
        }
        file.write_all(&chunk).map_err(|e| {
            Attempt::Fatal(Failure::new(
                "download_failed",
                format!("{}: {e}", part.display()),
            ))
        })?;
    }
    file.sync_all()
        .map_err(|e| Attempt::Fatal(Failure::new("download_failed", e.to_string())))
}

/// A 206 must start where we asked, or its bytes do not belong after ours.
fn resumes_at(response: &reqwest::Response, have: u64) -> bool {
    response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|start| start.parse::<u64>().ok())
        == Some(have)
}

/// Bytes whose size and digest were checked against a verified manifest: what is installed
/// is these, never the file re-read by its path, which another writer of the folder could
/// have changed in between.
#[derive(Debug)]
pub struct Verified(pub(super) Vec<u8>);

impl Verified {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Checks a complete download against its manifest, whose signature was checked before the
/// download: size, then SHA-256.
pub fn verify(part: &Path, artifact: &Manifest) -> Result<Verified, Failure> {
    let mut bytes = Vec::with_capacity(usize::try_from(artifact.size).unwrap_or(0));
    std::fs::File::open(part)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Failure::new("download_failed", format!("{}: {e}", part.display())))?;
    if bytes.len() as u64 != artifact.size {
        return Err(Failure::new(
            "truncated",
            format!("{} of {} bytes", bytes.len(), artifact.size),
        ));
    }
    let sha = Sha256::hex_of(&bytes);
    if !sha.eq_ignore_ascii_case(&artifact.sha256) {
        return Err(Failure::new(
            "sha256_mismatch",
            format!(
                "the bytes hash to {sha}, the manifest says {}",
                artifact.sha256
            ),
        ));
    }
    Ok(Verified(bytes))
}
