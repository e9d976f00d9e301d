//! Connection hygiene on the gRPC port against the real server: silent
//! connections under a low open-file limit, `--max-connections`, bounded
//! requests, the per-connection stream cap and HTTP/2 keepalive (a raw
//! HTTP/2 client that reads the server's frames).

use std::time::Duration;

use hostscan::pb;
use hostscan::pb::scan_service_client::ScanServiceClient;
use tokio::io::AsyncReadExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::e2e::server_args;
use crate::support::eventually;
use crate::support::pg::TestDb;
use crate::support::server::{READY, Server, scrape};
use crate::support::sshd::{Keys, Options, Sshd};

async fn check_health(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

/// Connects and gets an answer, or says why not.
async fn served(server: &Server) -> Result<Channel, String> {
    let channel = Channel::from_shared(server.url())
        .expect("url")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    check_health(channel.clone())
        .await
        .map_err(|e| format!("health: {e:?}"))?;
    Ok(channel)
}

#[tokio::test]
async fn silent_connections_do_not_lock_out_a_fresh_client() {
    // The failure: at a file limit of 256, 300 connections that never
    // sent the HTTP/2 preface locked every new client out, and none of 500
    // was ever closed. The soft limit starts lower to show it is raised.
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let deadline = Duration::from_secs(3);
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", crate::support::free_port())
        .parse()
        .expect("addr");
    let server = Server::launch(
        &db.url,
        &server_args(
            &keys,
            &sshd,
            &[
                "--handshake-timeout",
                "3",
                "--metrics-listen",
                &metrics.to_string(),
            ],
        ),
        &[],
        "ulimit -S -n 128; ulimit -H -n 256; ",
        READY,
    )
    .await;
    assert!(
        server
            .logs()
            .contains("raised the open-file limit to its hard limit")
            && server.logs().contains("before=128 limit=256"),
        "{}",
        server.logs()
    );

    let mut silent = Vec::new();
    for _ in 0..500 {
        silent.push(
            tokio::net::TcpStream::connect(server.addr)
                .await
                .expect("connect: the server keeps accepting"),
        );
    }
    // A fresh client is served within the handshake deadline, while the
    // silent connections are still there.
    tokio::time::timeout(deadline, served(&server))
        .await
        .expect("a fresh client served within the handshake deadline")
        .expect("a fresh client served");

    // Every silent connection is closed by the server: at once when it
    // could not be held, else at the handshake deadline. A read returns
    // when the server closes (EOF or reset); the deadline fails the test.
    let by = tokio::time::Instant::now() + Duration::from_secs(30);
    for (i, mut tcp) in silent.into_iter().enumerate() {
        let mut buf = [0u8; 64];
        match tokio::time::timeout_at(by, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("silent connection {i} got {n} bytes"),
            Err(_) => panic!("silent connection {i} was never closed"),
        }
    }
    // Each silent connection was closed for a counted reason; the fresh
    // client (and the scrapes) got through.
    let reasons = ["limit", "displaced", "handshake_timeout", "handshake"];
    eventually(
        "every silent connection counted",
        Duration::from_secs(30),
        || async {
            let m = scrape(metrics).await;
            let closed: f64 = reasons
                .iter()
                .map(|r| {
                    m.get(&format!(
                        "hostscan_grpc_connections_rejected_total{{reason=\"{r}\"}}"
                    ))
                    .copied()
                    .unwrap_or(0.0)
                })
                .sum();
            (closed == 500.0).then_some(())
        },
    )
    .await;
    // The server is still fine.
    served(&server).await.expect("served afterwards");
    assert!(!server.logs().contains("panicked"));
}

#[tokio::test]
async fn max_connections_closes_extra_connections_at_once() {
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server = Server::start(
        &db.url,
        &server_args(&keys, &sshd, &["--max-connections", "3"]),
    )
    .await;
    let mut established = Vec::new();
    for _ in 0..3 {
        established.push(served(&server).await.expect("within the limit"));
    }
    // Every slot holds an established connection: the next is closed at
    // once, not queued and not served.
    let extra = served(&server).await;
    assert!(extra.is_err(), "a fourth connection was served");
    // The established ones keep working.
    for c in &established {
        check_health(c.clone())
            .await
            .expect("established connection");
    }
    // Once one closes, a new client gets its place.
    drop(established.pop());
    eventually("a slot to free up", Duration::from_secs(20), || async {
        served(&server).await.ok()
    })
    .await;
}

#[tokio::test]
async fn requests_are_bounded() {
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server = Server::start(&db.url, &server_args(&keys, &sshd, &[])).await;
    let mut client = ScanServiceClient::new(server.channel().await);
    // A 1 MB filter never reaches validation or the database.
    let status = client
        .list_scans(pb::ListScansRequest {
            hostname: "a".repeat(1 << 20),
            ..Default::default()
        })
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // Just under the cap, it is validated: the field is named.
    let status = client
        .list_scans(pb::ListScansRequest {
            hostname: "a".repeat(60_000),
            ..Default::default()
        })
        .await
        .expect_err("too long");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("hostname: "),
        "{}",
        status.message()
    );
    // The connection and the server are fine.
    client
        .list_scans(pb::ListScansRequest::default())
        .await
        .expect("a normal request");
}

/// Reads from a raw TCP connection until it closes; the bytes read.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = tcp.read_to_end(&mut all).await;
    all
}

#[tokio::test]
async fn non_http2_clients_are_closed() {
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server = Server::start(&db.url, &server_args(&keys, &sshd, &[])).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let answer = tokio::time::timeout(Duration::from_secs(30), read_until_closed(&mut tcp))
        .await
        .expect("the server closes the connection");
    assert!(answer.is_empty(), "no HTTP/1 answer: {answer:?}");
    served(&server).await.expect("still serving");
}

/// One HTTP/2 frame off a raw connection: (type, flags, payload); `None`
/// when the connection closed.
async fn read_frame(tcp: &mut tokio::net::TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], payload))
}

/// An HTTP/2 frame on stream 0.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
/// SETTINGS_MAX_CONCURRENT_STREAMS.
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// A raw HTTP/2 client past the preface: the server's SETTINGS (id → value)
/// once it has acknowledged them.
async fn http2_client(server: &Server) -> (tokio::net::TcpStream, Vec<(u16, u32)>) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, &[]));
    tcp.write_all(&hello).await.expect("preface");
    let (kind, flags, payload) = read_frame(&mut tcp).await.expect("the server's SETTINGS");
    assert_eq!(
        (kind, flags),
        (SETTINGS, 0),
        "the server speaks first with SETTINGS"
    );
    let settings = payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    tcp.write_all(&frame(SETTINGS, ACK, &[]))
        .await
        .expect("settings ack");
    (tcp, settings)
}

/// `--max-streams-per-connection` reaches the wire as the server's
/// SETTINGS_MAX_CONCURRENT_STREAMS, and HTTP/2 keepalive works both ways: a
/// client that answers the server's PINGs keeps its connection through
/// several of them; one that does not is closed after
/// `--http2-keepalive-timeout`.
#[tokio::test]
async fn http2_stream_cap_and_keepalive_pings() {
    use tokio::io::AsyncWriteExt;
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server = Server::start(
        &db.url,
        &server_args(
            &keys,
            &sshd,
            &[
                "--max-streams-per-connection",
                "7",
                "--http2-keepalive-interval",
                "1",
                "--http2-keepalive-timeout",
                "1",
            ],
        ),
    )
    .await;

    let (mut answering, settings) = http2_client(&server).await;
    assert!(
        settings.contains(&(MAX_CONCURRENT_STREAMS, 7)),
        "{settings:?}"
    );
    let (mut silent, _) = http2_client(&server).await;

    // Three PINGs answered, and the connection is still open for a fourth.
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        let mut pings = 0;
        while pings < 4 {
            let (kind, flags, payload) = read_frame(&mut answering)
                .await
                .expect("the answering client keeps its connection");
            assert_ne!(kind, GOAWAY, "the answering client was sent away");
            if kind == PING && flags & ACK == 0 {
                pings += 1;
                answering
                    .write_all(&frame(PING, ACK, &payload))
                    .await
                    .expect("ping ack");
            }
        }
        pings
    })
    .await
    .expect("PINGs keep coming every second");
    assert_eq!(answered, 4);

    // The silent one: a PING, then GOAWAY or the end of the connection.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        let mut pinged = false;
        loop {
            match read_frame(&mut silent).await {
                None => return ("closed", pinged),
                Some((GOAWAY, _, _)) => return ("goaway", pinged),
                Some((PING, flags, _)) if flags & ACK == 0 => pinged = true,
                Some(_) => {}
            }
        }
    })
    .await
    .expect("an unanswered PING ends the connection");
    assert!(ended.1, "the server pinged before closing: {ended:?}");
    served(&server).await.expect("still serving");
}
