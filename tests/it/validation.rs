//! The last validation gaps, against the real server: ListScans' hostname,
//! NUL bytes and over-long strings, a WatchScan mark ahead of the scan, and
//! a property test that drives random requests through every RPC.

use std::time::Duration;

use hostscan::pb;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use prost::Message as _;
use tonic::Code;

use crate::e2e::server_args;
use crate::support::is_terminal;
use crate::support::pg::TestDb;
use crate::support::server::{Server, watch};
use crate::support::sshd::{Keys, Options, Sshd};
use crate::support::{free_port, temp_dir};

fn quick(port: u16) -> pb::StartScanRequest {
    pb::StartScanRequest {
        hostname: "127.0.0.1".into(),
        port: u32::from(port),
        scan_type: pb::ScanType::Quick as i32,
        ..Default::default()
    }
}

/// Every event of a stream until it ends; fails the test if it does not
/// end within `within` (the issue's stream never ended).
async fn to_the_end(
    mut stream: tonic::codec::Streaming<pb::ScanEvent>,
    within: Duration,
) -> Vec<pb::ScanEvent> {
    tokio::time::timeout(within, async move {
        let mut events = Vec::new();
        while let Some(e) = stream.message().await.expect("stream") {
            events.push(e);
        }
        events
    })
    .await
    .expect("the stream ends after the terminal event")
}

#[tokio::test]
async fn list_scans_hostname_is_validated_like_start_scan() {
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server = Server::start(&db.url, &server_args(&keys, &sshd, &[])).await;
    let mut client = server.client().await;
    client
        .start_scan(pb::StartScanRequest {
            hostname: "LocalHost".into(),
            ..quick(sshd.port)
        })
        .await
        .expect("start");
    // The issue's failures: a NUL byte gave INTERNAL, and 1 MB was queried.
    for (hostname, expected) in [
        ("a\0b".to_string(), Code::InvalidArgument),
        ("\0".to_string(), Code::InvalidArgument),
        ("web 1".to_string(), Code::InvalidArgument),
        ("%".to_string(), Code::InvalidArgument),
        ("a".repeat(254), Code::InvalidArgument),
        ("a".repeat(1 << 20), Code::OutOfRange),
    ] {
        let status = client
            .list_scans(pb::ListScansRequest {
                hostname: hostname.clone(),
                ..Default::default()
            })
            .await
            .expect_err("invalid filter");
        assert_eq!(status.code(), expected, "{status:?}");
        if expected == Code::InvalidArgument {
            assert!(
                status.message().starts_with("hostname: "),
                "{}",
                status.message()
            );
            assert!(!status.message().contains('\0'), "the NUL is escaped");
        }
    }
    // A valid filter is normalised the way StartScan stores names.
    let found = client
        .list_scans(pb::ListScansRequest {
            hostname: "LOCALHOST".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(found.total_size, 1);
    assert_eq!(found.scans[0].hostname, "localhost");
    // Other strings: NUL bytes and over-long values name their field.
    let status = client
        .start_scan(pb::StartScanRequest {
            username: "root\0".into(),
            ..quick(sshd.port)
        })
        .await
        .expect_err("NUL in username");
    assert!(
        status.message().starts_with("username: "),
        "{}",
        status.message()
    );
    let status = client
        .start_scan(pb::StartScanRequest {
            request_id: format!("{}\0", "r".repeat(10)),
            ..quick(sshd.port)
        })
        .await
        .expect_err("NUL in request_id");
    assert!(
        status.message().starts_with("request_id: "),
        "{}",
        status.message()
    );
    let status = client
        .list_scans(pb::ListScansRequest {
            page_token: "A".repeat(10_000),
            ..Default::default()
        })
        .await
        .expect_err("long token");
    assert!(
        status.message().starts_with("page_token: "),
        "{}",
        status.message()
    );
}

/// Sends bytes as they are, to reach the server's decoder with what no
/// generated client can build.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

#[tokio::test]
async fn undecodable_requests_are_invalid_argument_naming_the_field() {
    let db = TestDb::new().await;
    let server = Server::start(&db.url, &[]).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    // StartScanRequest.hostname (field 1, length-delimited) holding bytes
    // that are not UTF-8; a scan_id cut off inside its varint; a key with
    // wire type 7, which no field can have.
    for (method, body, field) in [
        ("StartScan", vec![0x0a, 0x02, 0xff, 0xfe], "hostname: "),
        ("ListScans", vec![0x0a, 0x01, 0xc3], "hostname: "),
        ("GetScan", vec![0x08, 0x80], "scan_id: "),
        ("GetScan", vec![0x0f], "request: "),
    ] {
        grpc.ready().await.expect("ready");
        let path = http::uri::PathAndQuery::try_from(format!("/hostscan.v1.ScanService/{method}"))
            .expect("path");
        let status = grpc
            .unary(tonic::Request::new(body), path, RawCodec)
            .await
            .expect_err("undecodable request");
        assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status:?}");
        assert!(
            status.message().starts_with(field) && status.message().contains("not valid protobuf"),
            "{method}: {}",
            status.message()
        );
    }
    // And the server goes on serving.
    let scan = server
        .client()
        .await
        .get_scan(pb::GetScanRequest { scan_id: 1 })
        .await
        .expect_err("no scan 1 yet");
    assert_eq!(scan.code(), Code::NotFound, "{scan:?}");
}

#[tokio::test]
async fn watch_with_a_mark_ahead_of_the_scan_gets_a_snapshot_and_ends() {
    // df waits for the gate: the scan is RUNNING while the watcher attaches.
    let gate_dir = temp_dir("hostscan-gate-");
    let gate = gate_dir.path().join("open");
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let (sshd, _userland) = Sshd::with_fakes(
        &keys,
        &[(
            "df",
            &format!(
                "while [ ! -e {} ]; do sleep 0.05; done; exec /usr/bin/df \"$@\"",
                gate.display()
            ),
        )],
    )
    .await;
    let server = Server::start(
        &db.url,
        &server_args(&keys, &sshd, &["--watch-heartbeat", "1"]),
    )
    .await;
    let mut client = server.client().await;
    let scan = client
        .start_scan(quick(sshd.port))
        .await
        .expect("start")
        .into_inner();
    let mut first = watch(&mut client, scan.id, 0).await;
    let now = loop {
        let e = first.message().await.expect("stream").expect("event");
        if e.progress >= 80 {
            break e;
        }
    };

    // The issue's failure: a mark above the scan's sequence dropped every
    // event, the terminal one included, and heartbeats said RUNNING forever.
    let ahead = watch(&mut client, scan.id, now.sequence + 1_000_000).await;
    let reader = tokio::spawn(to_the_end(ahead, Duration::from_secs(60)));
    std::fs::write(&gate, "").expect("open the gate");
    let events = reader.await.expect("reader");
    let snapshot = events.first().expect("a fresh snapshot first");
    assert!(snapshot.scan.is_some(), "the first event is a snapshot");
    assert!(snapshot.sequence <= now.sequence + 1, "{snapshot:?}");
    let last = events.last().expect("events");
    assert!(
        is_terminal(last.status),
        "ends on the terminal event: {last:?}"
    );
    assert_eq!(last.status, pb::ScanStatus::Completed as i32);
    assert!(last.scan.as_ref().is_some_and(|s| s.results.is_some()));
    to_the_end(first, Duration::from_secs(60)).await;

    // On a finished scan, a mark ahead gets the final state and ends.
    let late = to_the_end(
        watch(&mut client, scan.id, i64::MAX).await,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].sequence, last.sequence);
    assert!(late[0].scan.is_some());
    // A mark equal to the terminal sequence: nothing new, the stream ends.
    let caught_up = to_the_end(
        watch(&mut client, scan.id, last.sequence).await,
        Duration::from_secs(30),
    )
    .await;
    assert!(caught_up.is_empty(), "{caught_up:?}");
}

// ------------------------------------------------------------ property test

/// Strings as a hostile client sends them: anything, NUL bytes, control
/// characters, names, and lengths around the limits.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[a-zA-Z0-9.:_$-]{0,40}",
        1 => "[\\x00-\\x1f\\x7f]{1,8}",
        1 => Just("\0".to_string()),
        1 => (0usize..5).prop_map(|i| "x".repeat([33, 129, 254, 4096, 70_000][i])),
        1 => Just(String::new()),
    ]
    .boxed()
}

/// Ids and sequences: small real ones, and anything.
fn number() -> BoxedStrategy<i64> {
    prop_oneof![3 => -2i64..40, 1 => any::<i64>()].boxed()
}

fn enum_value() -> BoxedStrategy<i32> {
    prop_oneof![3 => -1i32..7, 1 => any::<i32>()].boxed()
}

/// One random request of every kind, with the ports it may use.
#[derive(Debug, Clone)]
enum Call {
    Start(pb::StartScanRequest),
    Get(pb::GetScanRequest),
    List(pb::ListScansRequest),
    Watch(pb::WatchScanRequest),
    Cancel(pb::CancelScanRequest),
    Hosts(pb::ListHostsRequest),
    /// WatchScans never ends by itself: only its opening is checked.
    Feed(pb::WatchScansRequest),
    Diff(pb::DiffScansRequest),
}

fn call(sshd_port: u16, refused_port: u16, user: String) -> BoxedStrategy<Call> {
    let host = prop_oneof![
        2 => Just("127.0.0.1".to_string()),
        1 => Just("::1".to_string()),
        1 => Just("localhost".to_string()),
        2 => text(),
    ];
    let port = prop_oneof![
        Just(0u32),
        Just(u32::from(sshd_port)),
        Just(u32::from(refused_port)),
        65_536u32..,
    ];
    let username = prop_oneof![2 => Just(String::new()), 2 => Just(user), 1 => text()];
    // Mostly valid, so that many scans run and get watched.
    let scan_type = prop_oneof![3 => 1i32..=2, 1 => enum_value()];
    let request_id = prop_oneof![3 => Just(String::new()), 2 => "[a-z]{1,3}", 1 => text()];
    let proxy_jump = prop_oneof![
        4 => Just(String::new()),
        1 => Just("none".to_string()),
        1 => Just(format!("127.0.0.1:{refused_port}")),
        2 => text(),
    ];
    let start = (
        host.clone(),
        port,
        username,
        scan_type,
        request_id,
        proxy_jump,
    )
        .prop_map(
            |(hostname, port, username, scan_type, request_id, proxy_jump)| {
                Call::Start(pb::StartScanRequest {
                    hostname,
                    port,
                    username,
                    scan_type,
                    request_id,
                    proxy_jump,
                })
            },
        );
    let list = (
        host.clone(),
        enum_value(),
        enum_value(),
        any::<i32>(),
        prop_oneof![Just(String::new()), text()],
    )
        .prop_map(|(hostname, status, scan_type, page_size, page_token)| {
            Call::List(pb::ListScansRequest {
                hostname,
                status,
                scan_type,
                page_size,
                page_token,
            })
        });
    let hosts = (
        prop_oneof![Just(String::new()), "[a-z0-9.:-]{1,8}", text()],
        prop_oneof![Just(String::new()), Just("debian".to_string()), text()],
        any::<i32>(),
        prop_oneof![Just(String::new()), text()],
        prop_oneof![Just(String::new()), Just("hostname".to_string()), text()],
    )
        .prop_map(
            |(hostname_prefix, os_id, page_size, page_token, order_by)| {
                Call::Hosts(pb::ListHostsRequest {
                    hostname_prefix,
                    os_id,
                    page_size,
                    page_token,
                    order_by,
                })
            },
        );
    let feed = (
        host,
        enum_value(),
        enum_value(),
        prop_oneof![Just(String::new()), text()],
    )
        .prop_map(|(hostname, status, scan_type, resume_token)| {
            Call::Feed(pb::WatchScansRequest {
                hostname,
                status,
                scan_type,
                resume_token,
            })
        });
    let threshold = prop_oneof![
        2 => Just(None),
        3 => (-1e3f64..1e3).prop_map(Some),
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY]).prop_map(Some),
    ];
    let diff = (number(), number(), any::<bool>(), threshold).prop_map(
        |(base_scan_id, scan_id, allow_different_hosts, used_percent_threshold)| {
            Call::Diff(pb::DiffScansRequest {
                base_scan_id,
                scan_id,
                allow_different_hosts,
                used_percent_threshold,
            })
        },
    );
    prop_oneof![
        1 => diff,
        1 => feed,
        1 => hosts,
        3 => start,
        1 => number().prop_map(|scan_id| Call::Get(pb::GetScanRequest { scan_id })),
        2 => list,
        3 => (number(), number()).prop_map(|(scan_id, after_sequence)| Call::Watch(pb::WatchScanRequest { scan_id, after_sequence })),
        1 => number().prop_map(|scan_id| Call::Cancel(pb::CancelScanRequest { scan_id })),
    ]
    .boxed()
}

/// Every field name an INVALID_ARGUMENT message may start with.
const FIELDS: &[&str] = &[
    "hostname",
    "port",
    "username",
    "scan_type",
    "request_id",
    "scan_id",
    "status",
    "page_size",
    "page_token",
    "after_sequence",
    "hostname_prefix",
    "os_id",
    "proxy_jump",
    "resume_token",
    "base_scan_id",
    "used_percent_threshold",
    "order_by",
];

/// A rejected call is fine if it says which field, or that the scan does
/// not exist, or that the message is over the size cap; never INTERNAL or
/// UNKNOWN.
fn assert_clean_rejection(status: &tonic::Status, request_len: usize, what: &str) {
    match status.code() {
        Code::InvalidArgument => assert!(
            FIELDS
                .iter()
                .any(|f| status.message().starts_with(&format!("{f}: "))),
            "{what}: INVALID_ARGUMENT without a field name: {}",
            status.message()
        ),
        Code::NotFound => {}
        Code::OutOfRange => assert!(
            request_len > hostscan::api::MAX_REQUEST_BYTES,
            "{what}: OUT_OF_RANGE for a {request_len}-byte request"
        ),
        other => panic!("{what}: {other:?}: {}", status.message()),
    }
}

#[tokio::test]
async fn random_requests_through_every_rpc() {
    let seed: u64 = std::env::var("HOSTSCAN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("random_requests_through_every_rpc: HOSTSCAN_FUZZ_SEED={seed}");
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let mut server = Server::start(&db.url, &server_args(&keys, &sshd, &[])).await;
    let client = server.client().await;
    let refused = free_port();

    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = call(sshd.port, refused, sshd.user.clone());
    let mut created: Vec<i64> = Vec::new();
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..300 {
        let mut c = strategy
            .new_tree(&mut runner)
            .expect("a random request")
            .current();
        // Scans must reach only this machine: a name that would pass
        // validation and is not loopback is made invalid (no DNS lookups).
        if let Call::Start(r) = &mut c
            && hostscan::api::validate_hostname(&r.hostname)
                .is_ok_and(|h| !matches!(h.as_str(), "127.0.0.1" | "::1" | "localhost"))
        {
            r.hostname.push(' ');
        }
        // Jump hosts too: anything valid but not a refused loopback port
        // becomes one.
        if let Call::Start(r) = &mut c
            && hostscan::api::validate_proxy_jump(&r.proxy_jump)
                .is_ok_and(|j| !j.is_empty() && j != "none")
        {
            r.proxy_jump = format!("127.0.0.1:{refused}");
        }
        // Most watches and gets aim at scans that exist.
        if !created.is_empty() && i % 3 != 0 {
            let id = created[i % created.len()];
            match &mut c {
                Call::Watch(r) => r.scan_id = id,
                Call::Get(r) => r.scan_id = id,
                Call::Cancel(r) if i % 4 == 0 => r.scan_id = id,
                Call::Diff(r) => r.scan_id = id,
                _ => {}
            }
        }
        let what = format!("seed {seed} call {i}: {c:?}")
            .chars()
            .take(300)
            .collect::<String>();
        let mut client = client.clone();
        match c {
            Call::Start(r) => match client.start_scan(r.clone()).await {
                Ok(scan) => {
                    let scan = scan.into_inner();
                    assert!(scan.id > 0 && validated_target(&scan), "{what}");
                    created.push(scan.id);
                }
                Err(s) => assert_clean_rejection(&s, r.encoded_len(), &what),
            },
            Call::Get(r) => {
                if let Err(s) = client.get_scan(r).await {
                    assert_clean_rejection(&s, r.encoded_len(), &what);
                }
            }
            Call::List(r) => match client.list_scans(r.clone()).await {
                Ok(page) => assert!(page.into_inner().scans.len() <= 500, "{what}"),
                Err(s) => assert_clean_rejection(&s, r.encoded_len(), &what),
            },
            Call::Feed(r) => match client.watch_scans(r.clone()).await {
                // Opened: the snapshot was read; the stream is dropped here.
                Ok(stream) => drop(stream),
                Err(s) => assert_clean_rejection(&s, r.encoded_len(), &what),
            },
            Call::Diff(r) => match client.diff_scans(r).await {
                Ok(_) => {}
                // Not COMPLETED, different hosts, or no earlier scan.
                Err(s) if s.code() == Code::FailedPrecondition => {}
                Err(s) => assert_clean_rejection(&s, r.encoded_len(), &what),
            },
            Call::Hosts(r) => match client.list_hosts(r.clone()).await {
                Ok(page) => assert!(page.into_inner().hosts.len() <= 500, "{what}"),
                Err(s) => assert_clean_rejection(&s, r.encoded_len(), &what),
            },
            Call::Cancel(r) => {
                if let Err(s) = client.cancel_scan(r).await {
                    assert_clean_rejection(&s, r.encoded_len(), &what);
                }
            }
            Call::Watch(r) => match client.watch_scan(r).await {
                Ok(stream) => {
                    let stream = stream.into_inner();
                    streams.spawn(async move {
                        (what, r, to_the_end(stream, Duration::from_secs(120)).await)
                    });
                }
                Err(s) => assert_clean_rejection(&s, r.encoded_len(), &what),
            },
        }
    }
    // Every stream ended (to_the_end fails otherwise), with the terminal
    // event last, or at once if the client already had it.
    let mut watched = 0;
    while let Some(done) = streams.join_next().await {
        let (what, request, events) = done.expect("watch reader");
        watched += 1;
        match events.last() {
            Some(last) => {
                assert!(is_terminal(last.status), "{what}: ended on {last:?}");
                assert!(
                    last.scan.is_some(),
                    "{what}: the terminal event carries the scan"
                );
                assert!(
                    events[..events.len() - 1]
                        .iter()
                        .all(|e| !is_terminal(e.status)),
                    "{what}: events after the terminal one"
                );
            }
            None => {
                let mut c = client.clone();
                let scan = c
                    .get_scan(pb::GetScanRequest {
                        scan_id: request.scan_id,
                    })
                    .await
                    .expect("get")
                    .into_inner();
                assert!(
                    is_terminal(scan.status) && request.after_sequence == scan.sequence,
                    "{what}: an empty stream for {scan:?}"
                );
            }
        }
    }
    eprintln!(
        "random_requests_through_every_rpc: {} scans accepted, {watched} watch streams read to their end",
        created.len()
    );
    assert!(watched > 0, "seed {seed}: no watch stream was opened");
    assert!(!created.is_empty(), "seed {seed}: no scan was accepted");
    assert!(server.is_running(), "the server died");
    assert!(!server.logs().contains("panicked"), "{}", server.logs());
}

/// An accepted scan names loopback (the test made sure nothing else
/// passes) and a port in range.
fn validated_target(scan: &pb::Scan) -> bool {
    matches!(scan.hostname.as_str(), "127.0.0.1" | "::1" | "localhost")
        && (1..=65_535).contains(&scan.port)
}
