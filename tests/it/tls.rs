//! TLS and mTLS on the gRPC port, with certificates the tests make (rcgen):
//! real handshakes from tonic clients, the `hostscan` client commands and
//! grpcurl; a wrong CA and a missing client certificate are refused; SIGHUP
//! swaps certificates without dropping open streams.

use std::process::Command;
use std::time::Duration;

use hostscan::pb;
use hostscan::pb::scan_service_client::ScanServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::e2e::server_args;
use crate::support::pg::TestDb;
use crate::support::server::{BINARY, Server};
use crate::support::sshd::{Keys, Options, Sshd};
use crate::support::tls::{Pki, channel, path};
use crate::support::{eventually, temp_dir};

fn quick(port: u16) -> pb::StartScanRequest {
    pb::StartScanRequest {
        hostname: "127.0.0.1".into(),
        port: u32::from(port),
        scan_type: pb::ScanType::Quick as i32,
        ..Default::default()
    }
}

/// Health over `channel`: Ok(status) or the error the call got.
async fn health(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "hostscan.v1.ScanService".into(),
        })
        .await
        .map(|r| r.into_inner().status())
}

/// True if a client with these settings gets no answer: the handshake
/// fails at connect or, with TLS 1.3, on the first call.
async fn refused(
    server: &Server,
    ca: &std::path::Path,
    identity: Option<tonic::transport::Identity>,
) -> bool {
    match channel(server.addr, ca, identity).await {
        Err(_) => true,
        Ok(c) => health(c).await.is_err(),
    }
}

/// Scans to the end over `client`; the final scan.
async fn scan_to_end(client: &mut ScanServiceClient<Channel>, port: u16) -> pb::Scan {
    let scan = client
        .start_scan(quick(port))
        .await
        .expect("start")
        .into_inner();
    let mut stream = client
        .watch_scan(pb::WatchScanRequest {
            scan_id: scan.id,
            after_sequence: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut last = None;
    while let Some(e) = stream.message().await.expect("stream") {
        last = e.into_fields().scan.or(last);
    }
    last.expect("terminal scan")
}

fn hostscan(args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .args(args)
        .env_remove("HOSTSCAN_SERVER")
        .env_remove("HOSTSCAN_API_KEY")
        .output()
        .expect("run hostscan")
}

#[tokio::test]
async fn tls_serves_trusted_clients_and_refuses_others() {
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server = Server::start(
        &db.url,
        &server_args(&keys, &sshd, &[])
            .into_iter()
            .chain(pki.server_args(false))
            .collect::<Vec<_>>(),
    )
    .await;

    // A client trusting the server's CA: a real scan over TLS.
    let trusted = channel(server.addr, &pki.ca, None)
        .await
        .expect("TLS connect");
    let mut client = ScanServiceClient::new(trusted.clone());
    let done = scan_to_end(&mut client, sshd.port).await;
    assert_eq!(
        done.status,
        pb::ScanStatus::Completed as i32,
        "{:?}",
        done.error
    );
    assert_eq!(
        health(trusted).await.expect("health"),
        ServingStatus::Serving
    );

    // A client trusting another CA refuses the server.
    let error = channel(server.addr, &other.ca, None)
        .await
        .expect_err("wrong CA");
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
    // A plaintext client gets nothing either.
    let plaintext = Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await;
    if let Ok(c) = plaintext {
        assert!(health(c).await.is_err(), "plaintext on a TLS port");
    }

    // The client commands speak https:// with --ca.
    let url = format!("https://{}", server.addr);
    let out = hostscan(&["health", "--server", &url, "--ca", &path(&pki.ca)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
    let out = hostscan(&[
        "scan",
        "127.0.0.1",
        "--json",
        "--server",
        &url,
        "--ca",
        &path(&pki.ca),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hostscan(&["list", "--server", &url, "--ca", &path(&other.ca)]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the hostscan server"),
        "{stderr}"
    );
    // TLS flags with an http:// URL are a usage error, not silently ignored.
    let out = hostscan(&["list", "--server", &server.url(), "--ca", &path(&pki.ca)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("need an https:// --server"));
    // The server logged refused handshakes, never a panic.
    eventually(
        "the refused handshake in the log",
        Duration::from_secs(10),
        || {
            let logs = server.logs();
            async move { logs.contains("handshake failed").then_some(()) }
        },
    )
    .await;
    assert!(!server.logs().contains("panicked"));
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_and_keeps_api_keys() {
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let key = "k3y-0123456789abcdef";
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let mut args = server_args(&keys, &sshd, &["--api-key", key]);
    args.extend(pki.server_args(true));
    let server = Server::start(&db.url, &args).await;

    // No client certificate: refused at the handshake.
    assert!(
        refused(&server, &pki.ca, None).await,
        "no client certificate"
    );
    // A certificate from a CA the server does not trust: refused.
    assert!(
        refused(&server, &pki.ca, Some(other.identity())).await,
        "foreign client certificate"
    );

    // A good certificate gets through the handshake; API keys still apply.
    let mutual = channel(server.addr, &pki.ca, Some(pki.identity()))
        .await
        .expect("mTLS connect");
    assert_eq!(
        health(mutual.clone()).await.expect("health"),
        ServingStatus::Serving
    );
    let status = ScanServiceClient::new(mutual.clone())
        .list_scans(pb::ListScansRequest::default())
        .await
        .expect_err("no API key");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut client =
        ScanServiceClient::with_interceptor(mutual, hostscan::cli::Auth::new(Some(key)));
    client
        .list_scans(pb::ListScansRequest::default())
        .await
        .expect("certificate and key");

    // The client commands present --cert/--key (or their environment twins).
    let url = format!("https://{}", server.addr);
    let out = Command::new(BINARY)
        .args(["list", "--json", "--server", &url])
        .env("HOSTSCAN_SERVER_CA", &pki.ca)
        .env("HOSTSCAN_CLIENT_CERT", &pki.client_cert)
        .env("HOSTSCAN_CLIENT_KEY", &pki.client_key)
        .env("HOSTSCAN_API_KEY", key)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hostscan(&[
        "health",
        "--server",
        &url,
        "--ca",
        &path(&pki.ca),
        "--cert",
        &path(&pki.client_cert),
        "--key",
        &path(&pki.client_key),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hostscan(&["health", "--server", &url, "--ca", &path(&pki.ca)]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "health without a client certificate"
    );
    let out = hostscan(&[
        "health",
        "--server",
        &url,
        "--ca",
        &path(&pki.ca),
        "--cert",
        &path(&pki.client_cert),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cert and --key go together"));
}

#[tokio::test]
async fn sighup_swaps_certificates_without_dropping_streams() {
    let first = Pki::new("first");
    let second = Pki::new("second");
    // The server reads its files from here; the test swaps their contents.
    let live = temp_dir("hostscan-live-tls-");
    let (cert, key, ca) = (
        live.path().join("cert.pem"),
        live.path().join("key.pem"),
        live.path().join("client-ca.pem"),
    );
    let install = |pki: &Pki| {
        std::fs::copy(&pki.server_cert, &cert).expect("cert");
        std::fs::copy(&pki.server_key, &key).expect("key");
        std::fs::copy(&pki.ca, &ca).expect("client CA");
    };
    install(&first);
    // df waits for the gate, so the scan's watch stream is open across the reload.
    let gate = live.path().join("gate");
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
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", crate::support::free_port())
        .parse()
        .expect("addr");
    let mut args = server_args(&keys, &sshd, &["--metrics-listen", &metrics.to_string()]);
    args.extend(
        [
            "--tls-cert",
            &path(&cert),
            "--tls-key",
            &path(&key),
            "--tls-client-ca",
            &path(&ca),
        ]
        .map(String::from),
    );
    let server = Server::start(&db.url, &args).await;

    let old = channel(server.addr, &first.ca, Some(first.identity()))
        .await
        .expect("connect with the first CA");
    let mut client = ScanServiceClient::new(old.clone());
    let scan = client
        .start_scan(quick(sshd.port))
        .await
        .expect("start")
        .into_inner();
    let mut stream = client
        .watch_scan(pb::WatchScanRequest {
            scan_id: scan.id,
            after_sequence: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    // Running, and stuck in df until the gate opens.
    let stuck = crate::support::percent_before_df(hostscan::model::ScanType::Quick);
    loop {
        let e = stream.message().await.expect("stream").expect("an event");
        if e.progress >= stuck {
            break;
        }
    }

    install(&second);
    server.signal("HUP");
    eventually("the reload in the log", Duration::from_secs(20), || {
        let logs = server.logs();
        async move { logs.contains("reloaded the TLS certificate").then_some(()) }
    })
    .await;
    // New connections get the new certificate and trust the new client CA.
    let new = channel(server.addr, &second.ca, Some(second.identity()))
        .await
        .expect("connect with the second CA");
    assert_eq!(
        health(new.clone()).await.expect("health"),
        ServingStatus::Serving
    );
    assert!(
        refused(&server, &first.ca, Some(first.identity())).await,
        "the old CA is gone"
    );
    // The connection made before the reload still works...
    assert_eq!(
        health(old).await.expect("old connection"),
        ServingStatus::Serving
    );
    // ...and its stream runs to the end.
    std::fs::write(&gate, "").expect("open the gate");
    let mut last = None;
    while let Some(e) = stream
        .message()
        .await
        .expect("the stream survives the reload")
    {
        last = Some(e);
    }
    let last = last.expect("events after the reload");
    assert_eq!(last.status, pb::ScanStatus::Completed as i32);

    // A broken file: the reload fails, the current certificate stays.
    std::fs::write(&cert, "not a certificate").expect("break the cert");
    server.signal("HUP");
    eventually(
        "the failed reload in the log",
        Duration::from_secs(20),
        || {
            let logs = server.logs();
            async move { logs.contains("TLS reload failed").then_some(()) }
        },
    )
    .await;
    let again = channel(server.addr, &second.ca, Some(second.identity()))
        .await
        .expect("still the second certificate");
    assert_eq!(health(again).await.expect("health"), ServingStatus::Serving);
    drop(new);
    let m = crate::support::server::scrape(metrics).await;
    assert_eq!(
        m.get(r#"hostscan_tls_reloads_total{result="success"}"#),
        Some(&1.0)
    );
    assert_eq!(
        m.get(r#"hostscan_tls_reloads_total{result="failure"}"#),
        Some(&1.0)
    );
}

#[tokio::test]
async fn tls_settings_are_checked_before_listening() {
    let pki = Pki::new("main");
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--database-url", "postgres://127.0.0.1:1/x"];
        args.extend_from_slice(extra);
        Command::new(BINARY).args(&args).output().expect("run")
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // A non-loopback address without TLS needs --insecure-plaintext.
    let out = serve(&["--listen", "0.0.0.0:0", "--api-key", "k3y-0123456789abcdef"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--insecure-plaintext"),
        "{}",
        stderr(&out)
    );
    // Half a pair, a CA without a certificate, unreadable or mismatched files.
    let out = serve(&["--tls-cert", &path(&pki.server_cert)]);
    assert!(
        stderr(&out).contains("--tls-key/HOSTSCAN_TLS_KEY: is required"),
        "{}",
        stderr(&out)
    );
    let out = serve(&["--tls-client-ca", &path(&pki.ca)]);
    assert!(
        stderr(&out).contains("--tls-client-ca/HOSTSCAN_TLS_CLIENT_CA: needs"),
        "{}",
        stderr(&out)
    );
    let out = serve(&[
        "--tls-cert",
        "/nonexistent.pem",
        "--tls-key",
        &path(&pki.server_key),
    ]);
    assert!(
        stderr(&out).contains("--tls-cert/HOSTSCAN_TLS_CERT: /nonexistent.pem"),
        "{}",
        stderr(&out)
    );
    let out = serve(&[
        "--tls-cert",
        &path(&pki.server_key),
        "--tls-key",
        &path(&pki.server_key),
    ]);
    assert!(
        stderr(&out).contains("no CERTIFICATE block"),
        "{}",
        stderr(&out)
    );
    let out = serve(&[
        "--tls-cert",
        &path(&pki.server_cert),
        "--tls-key",
        &path(&pki.client_key),
    ]);
    assert!(
        stderr(&out).contains("does not match the certificate"),
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(2));
}
