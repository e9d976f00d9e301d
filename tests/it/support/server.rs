//! The real `hostscan serve` binary on 127.0.0.1:0, and clients for it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostscan::pb::scan_service_client::ScanServiceClient;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::run;

pub const BINARY: &str = env!("CARGO_BIN_EXE_hostscan");
/// Logged, followed by the address, once the server serves everything.
pub const READY: &str = "hostscan listening on ";
/// Logged, followed by the address, once the gRPC port is open (health
/// answers) even if the database is not there yet.
pub const PORT_OPEN: &str = "gRPC port ";

pub struct Server {
    pub addr: SocketAddr,
    pub pid: u32,
    /// The `sh` wrapper that kills the server when our stdin pipe closes.
    wrapper: Child,
    log: Arc<Mutex<Vec<String>>>,
}

pub type Client = ScanServiceClient<InterceptedService<Channel, hostscan::cli::Auth>>;

impl Server {
    /// Starts `hostscan serve` with the given database and flags; returns
    /// once it logs its listening address.
    pub async fn start(database_url: &str, args: &[String]) -> Self {
        Self::start_env(database_url, args, &[]).await
    }

    pub async fn start_env(database_url: &str, args: &[String], env: &[(&str, &str)]) -> Self {
        Self::launch(database_url, args, env, "", READY).await
    }

    /// Starts `hostscan serve` after the shell commands `prelude` (e.g.
    /// `ulimit -n 256;`) and returns once it logs `marker` followed by its
    /// address: `READY` (serving) or `PORT_OPEN` (still waiting for the
    /// database).
    pub async fn launch(
        database_url: &str,
        args: &[String],
        env: &[(&str, &str)],
        prelude: &str,
        marker: &str,
    ) -> Self {
        let mut command = format!("exec 3<&0\n{prelude}'{BINARY}' serve --listen 127.0.0.1:0");
        for a in args {
            command.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        }
        command.push_str(
            " 2>&1 &\nchild=$!\necho \"pid $child\"\n\
             ( read _unused <&3; kill -KILL $child 2>/dev/null ) &\n\
             wait $child",
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .env("DATABASE_URL", database_url)
            .env("HOSTSCAN_LOG", "info,hostscan=debug")
            .env_remove("HOSTSCAN_API_KEYS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut wrapper = cmd.spawn().expect("spawn hostscan serve");
        let stdout = wrapper.stdout.take().expect("stdout");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = oneshot::channel::<Option<(u32, SocketAddr)>>();
        let log2 = log.clone();
        let marker = marker.to_string();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut pid = 0;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = line.strip_prefix("pid ") {
                    pid = p.trim().parse().unwrap_or(0);
                    continue;
                }
                if let Some(rest) = line.split(marker.as_str()).nth(1) {
                    let addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
                    if let (Some(addr), Some(tx)) = (addr, tx.take()) {
                        tx.send(Some((pid, addr))).ok();
                    }
                }
                log2.lock().expect("log").push(line);
            }
            if let Some(tx) = tx.take() {
                tx.send(None).ok();
            }
        });
        let started = tokio::time::timeout(Duration::from_secs(60), rx).await;
        let Ok(Ok(Some((pid, addr)))) = started else {
            let text = log.lock().expect("log").join("\n");
            panic!("hostscan serve did not start:\n{text}");
        };
        Self {
            addr,
            pid,
            wrapper,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connect to hostscan")
    }

    /// A client without an API key.
    pub async fn client(&self) -> Client {
        self.client_with_key(None).await
    }

    pub async fn client_with_key(&self, key: Option<&str>) -> Client {
        let auth = hostscan::cli::Auth::new(key);
        ScanServiceClient::with_interceptor(self.channel().await, auth)
    }

    /// Whether the server process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.wrapper.try_wait(), Ok(None))
    }

    pub fn logs(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    pub fn signal(&self, signal: &str) {
        run("kill", &[&format!("-{signal}"), &self.pid.to_string()]);
    }

    /// Waits for the server to exit; its exit status.
    pub async fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.wrapper.try_wait() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hostscan serve did not exit within {within:?}; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.wrapper.try_wait() {
            drop(self.wrapper.stdin.take());
            let _ = self.wrapper.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- hostscan serve log ----\n{}", self.logs());
        }
    }
}

/// Opens WatchScan for `scan_id` from `after_sequence`.
pub async fn watch(
    client: &mut Client,
    scan_id: i64,
    after_sequence: i64,
) -> tonic::codec::Streaming<hostscan::pb::ScanEvent> {
    client
        .watch_scan(hostscan::pb::WatchScanRequest {
            scan_id,
            after_sequence,
        })
        .await
        .expect("watch")
        .into_inner()
}

/// `GET /metrics` from the server's metrics listener: series → value, e.g.
/// `hostscan_scans_finished_total{scan_type="quick",status="completed",error_kind="none"}`.
/// Label order is as the exporter prints it.
pub async fn scrape(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics listener");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}
