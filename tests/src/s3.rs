//! A real S3-protocol server (s3s-fs) in this process, on a random 127.0.0.1 port, with
//! its own runtime on its own thread, so a test can stop it (an outage) and start it again
//! on the same port and folder. Requests are authenticated with SigV4 like AWS's.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "ferry-test-access";
pub const SECRET_KEY: &str = "ferry-test-secret-key";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    root: tempfile::TempDir,
    port: u16,
    running: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

impl S3Server {
    /// Starts a server with one empty bucket.
    pub fn start(bucket: &str) -> Self {
        let root = tempfile::tempdir().expect("tempdir for s3s-fs");
        std::fs::create_dir(root.path().join(bucket)).expect("bucket folder");
        let mut server = Self {
            root,
            port: crate::free_port(),
            running: None,
        };
        server.resume();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where s3s-fs keeps a bucket's objects: `{root}/{bucket}/{key}`.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.path().join(bucket)
    }

    /// The environment a client needs to reach this server through the standard AWS chain.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }

    /// Closes the listener and every open connection: clients see refused connections.
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            let _ = stop.send(());
            thread.join().expect("s3 server thread");
        }
    }

    /// Serves again on the same port and folder.
    pub fn resume(&mut self) {
        assert!(self.running.is_none(), "s3 server already running");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let root = self.root.path().to_owned();
        let port = self.port;
        let thread = std::thread::spawn(move || serve(&root, port, stop_rx, ready_tx));
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("s3 server did not start")
            .expect("s3 server could not bind its port");
        self.running = Some((stop_tx, thread));
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(
    root: &Path,
    port: u16,
    stop: tokio::sync::oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("s3 server runtime");
    runtime.block_on(async move {
        let fs = match s3s_fs::FileSystem::new(root) {
            Ok(fs) => fs,
            Err(e) => {
                let _ = ready.send(Err(format!("s3s-fs: {e:?}")));
                return;
            }
        };
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        // The port may still be in TIME_WAIT from the last run: try for a while.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => {
                    let _ = ready.send(Err(e.to_string()));
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let _ = ready.send(Ok(()));
        // HTTP/1.1 only, as the SDK speaks to a plain-http endpoint.
        let http = http1::Builder::new();
        let mut stop = std::pin::pin!(stop);
        loop {
            let socket = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(_) => continue,
                },
            };
            let conn = http.serve_connection(TokioIo::new(socket), service.clone());
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    // Dropping the runtime aborts the connections still open, as a crash would.
    runtime.shutdown_background();
}
