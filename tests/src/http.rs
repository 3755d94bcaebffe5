//! A minimal HTTP/1.1 client over std's TcpStream, enough for a POS posting JSON. Small on
//! purpose: the tests need to see connection failures as they happen, not retried away.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// POSTs `body` and returns the status code and body, or the I/O error when the agent
/// gave no answer (refused, reset, or timed out).
pub fn post_json(port: u16, path: &str, token: &str, body: &str) -> std::io::Result<(u16, String)> {
    request(port, "POST", path, token, body)
}

/// Any request; an empty `body` sends none. Gives up on an answer after 10 s.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    request_within(port, method, path, token, body, Duration::from_secs(10))
}

/// The same, waiting up to `timeout` for the answer.
pub fn request_within(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // Up to the end of the body its Content-Length gives, or of the stream: a server may
    // keep the connection open whatever `Connection: close` asked (chromedriver does).
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(end) = complete(&response) {
            response.truncate(end);
            break;
        }
    }
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("truncated response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok((status, body.to_owned()))
}

/// Where a response with a `Content-Length` ends, once all of it is in `bytes`.
fn complete(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    (bytes.len() >= head_end + length).then_some(head_end + length)
}

/// `n` connections that each send half a request head and then nothing, as a slow or
/// hostile client would; kept open while the returned streams live.
pub fn half_sent(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut stream = TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("half-sent connection {i}: {e}"));
            let _ =
                stream.write_all(b"POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
            stream
        })
        .collect()
}

/// How many of `streams` the server has closed (a read sees the end, or a reset).
pub fn closed_by_server(streams: &mut [TcpStream]) -> usize {
    streams
        .iter_mut()
        .filter_map(|s| {
            let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
            let mut byte = [0u8; 1];
            let closed = match s.read(&mut byte) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            };
            closed.then_some(())
        })
        .count()
}

/// Clients that hold a server's connections as an attacker would: `slow_bodies` that
/// declare a 1 MB body and send one byte of it, and `non_readers` that pipeline requests
/// for `big_path` and never read an answer. Kept open until dropped.
pub struct SlowClients {
    streams: Vec<TcpStream>,
}

impl SlowClients {
    pub fn open(
        port: u16,
        token: &str,
        slow_bodies: usize,
        non_readers: usize,
        big_path: &str,
    ) -> Self {
        let mut streams = Vec::with_capacity(slow_bodies + non_readers);
        for _ in 0..slow_bodies {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("slow client connects");
            let _ = write!(
                s,
                "POST /v1/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{"
            );
            streams.push(s);
        }
        let get = format!(
            "GET {big_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        for _ in 0..non_readers {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("non-reader connects");
            // Many answers asked for at once, so that they outgrow the socket buffers.
            let _ = s.write_all(get.repeat(64).as_bytes());
            streams.push(s);
        }
        Self { streams }
    }

    /// How many of them the server has closed by now (a read returns EOF, an answer such
    /// as 408, or an error rather than waiting).
    pub fn closed_by_server(&mut self) -> usize {
        let mut closed = 0;
        for s in &mut self.streams {
            let _ = s.set_nonblocking(true);
            let mut buf = [0u8; 65536];
            let gone = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    // An answer (a 408, or part of what a non-reader asked for): drain on.
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            closed += usize::from(gone);
        }
        closed
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// Asks `/healthz` every 250 ms for `span` while `during` runs between asks; every answer
/// must be 200 within `within`. Returns how many answers came.
pub fn healthz_answers_throughout(
    port: u16,
    span: Duration,
    within: Duration,
    mut during: impl FnMut(),
) -> usize {
    let end = std::time::Instant::now() + span;
    let mut answers = 0;
    while std::time::Instant::now() < end {
        match request_within(port, "GET", "/healthz", "", "", within) {
            Ok((200, _)) => answers += 1,
            other => panic!("/healthz on {port} did not answer 200 within {within:?}: {other:?}"),
        }
        during();
        std::thread::sleep(Duration::from_millis(250));
    }
    answers
}

/// What `n` back-to-back requests for an open `path` from one address met: how many were
/// answered 200 before the first 429, how many 429 and how many 200 after it (the rate
/// refilling while the burst goes on), whether each 429 said `Retry-After`, and whether one
/// more, after that wait, is answered 200 again.
#[derive(Debug)]
pub struct Budget {
    pub allowed: usize,
    pub limited: usize,
    pub refilled: usize,
    pub retry_after: bool,
    pub allowed_again: bool,
}

pub fn open_route_budget(port: u16, path: &str, n: usize) -> Budget {
    let ask = || -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connects");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        (status, head)
    };
    let mut budget = Budget {
        allowed: 0,
        limited: 0,
        refilled: 0,
        retry_after: true,
        allowed_again: false,
    };
    for _ in 0..n {
        match ask() {
            (200, _) if budget.limited == 0 => budget.allowed += 1,
            (200, _) => budget.refilled += 1,
            (429, head) => {
                budget.limited += 1;
                budget.retry_after &= head.contains("\r\nretry-after: 1");
            }
            (status, _) => panic!("{path}: {status} amid the burst"),
        }
    }
    std::thread::sleep(Duration::from_millis(1100));
    budget.allowed_again = ask().0 == 200;
    budget
}
