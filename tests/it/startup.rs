//! Start-up while the database is down: the gRPC port opens at once, health
//! says NOT_SERVING, the ScanService says UNAVAILABLE, and the server goes
//! live when the database comes, or exits with the reason after
//! `--database-wait`.

use std::time::Duration;

use hostscan::pb;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::e2e::server_args;
use crate::support::eventually;
use crate::support::free_port;
use crate::support::pg::Cluster;
use crate::support::server::{BINARY, PORT_OPEN, Server};
use crate::support::sshd::{Keys, Options, Sshd};

async fn health(server: &Server) -> Option<ServingStatus> {
    let mut h = HealthClient::new(server.channel().await);
    h.check(HealthCheckRequest {
        service: "hostscan.v1.ScanService".into(),
    })
    .await
    .ok()
    .map(|r| r.into_inner().status())
}

#[tokio::test]
async fn waits_for_the_database_then_serves() {
    // The failure: started while PostgreSQL was down, the server
    // exited after ~3 s.
    let mut cluster = Cluster::start().await;
    let url = cluster.migrated_database("hostscan").await;
    cluster.stop();
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let mut server = Server::launch(
        &url,
        &server_args(&keys, &sshd, &["--database-wait", "120"]),
        &[],
        "",
        PORT_OPEN,
    )
    .await;
    // Health answers at once, and says NOT_SERVING; the ScanService says
    // why it cannot answer yet.
    assert_eq!(health(&server).await, Some(ServingStatus::NotServing));
    let status = server
        .client()
        .await
        .list_scans(pb::ListScansRequest::default())
        .await
        .expect_err("no database yet");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("waiting for the database"),
        "{}",
        status.message()
    );
    // Still waiting after the first attempts failed.
    eventually(
        "a failed attempt in the log",
        Duration::from_secs(30),
        || {
            let logs = server.logs();
            async move {
                logs.contains("the database does not answer; waiting for it")
                    .then_some(())
            }
        },
    )
    .await;
    assert!(server.is_running(), "{}", server.logs());

    cluster.restart().await;
    eventually("SERVING", Duration::from_secs(60), || {
        let server = &server;
        async move { (health(server).await == Some(ServingStatus::Serving)).then_some(()) }
    })
    .await;
    // The connection made while waiting now reaches the live service.
    let mut client = server.client().await;
    let scan = client
        .start_scan(pb::StartScanRequest {
            hostname: "127.0.0.1".into(),
            scan_type: pb::ScanType::Quick as i32,
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner();
    let mut stream = crate::support::server::watch(&mut client, scan.id, 0).await;
    let mut last = None;
    while let Some(e) = stream.message().await.expect("stream") {
        last = Some(e);
    }
    assert_eq!(
        last.expect("events").status,
        pb::ScanStatus::Completed as i32
    );
    assert!(server.logs().contains("hostscan listening on"));
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(60)).await.success());
}

#[tokio::test]
async fn gives_up_after_the_database_wait_with_the_reason() {
    let url = format!("postgres://postgres@127.0.0.1:{}/hostscan", free_port());
    let keys = Keys::generate();
    let out = tokio::process::Command::new(BINARY)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-wait",
            "1",
            "--ssh-key",
            keys.client.to_str().expect("utf-8"),
        ])
        .env("DATABASE_URL", &url)
        .env("HOSTSCAN_LOG", "info")
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: the database did not answer within --database-wait 1s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("gRPC port"),
        "the port was open meanwhile: {stderr}"
    );
}
