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
    assert!(human.contains("Memory"), "{human}");
    // The disks section lists what this machine's df has (none in a chroot).
    assert_eq!(
        human.contains("Disks"),
        !crate::support::local_disk_mounts().is_empty(),
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

    // One host, its newest scan completed: the table and the JSON.
    let out = hostscan(&["hosts", "--server", &url]);
    let table = text(&out.stdout);
    assert!(
        table.contains(&format!("127.0.0.1:{}", sshd.port))
            && table.contains(&format!("scan {id}"))
            && table.contains("1 of 1 hosts"),
        "{table}"
    );
    let out = hostscan(&["hosts", "--json", "--os", "nosuchos", "--server", &url]);
    let none = json(&out);
    assert!(
        none.get("hosts").is_none() && none.get("totalSize").is_none(),
        "{none}"
    );
    let out = hostscan(&["hosts", "--prefix", "bad host", "--server", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("hostname_prefix:"),
        "{}",
        text(&out.stderr)
    );

    // A second host; by name, a page of one, and the paging line carries
    // the order, since a token pages only in its own.
    let out = hostscan(&["scan", "localhost", "--no-wait", "--server", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = hostscan(&[
        "hosts",
        "--order-by",
        "hostname",
        "--page-size",
        "1",
        "--server",
        &url,
    ]);
    let table = text(&out.stdout);
    assert!(
        table.contains("127.0.0.1:") && table.contains("1 of 2 hosts"),
        "{table}"
    );
    let token = table
        .lines()
        .find_map(|l| l.strip_prefix("next page: --page-token "))
        .and_then(|rest| rest.strip_suffix(" --order-by hostname"))
        .unwrap_or_else(|| panic!("a paging line with the order: {table}"))
        .to_string();
    let out = hostscan(&["hosts", "--page-token", &token, "--server", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("page_token: was issued for another order_by"),
        "{}",
        text(&out.stderr)
    );
    let out = hostscan(&[
        "hosts",
        "--order-by",
        "hostname",
        "--page-token",
        &token,
        "--json",
        "--server",
        &url,
    ]);
    let second = json(&out);
    assert_eq!(second["hosts"][0]["hostname"], "localhost", "{second}");
    assert!(second.get("nextPageToken").is_none(), "{second}");
    let out = hostscan(&["hosts", "--order-by", "os_id", "--server", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("order_by:"),
        "{}",
        text(&out.stderr)
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

/// The shell block of README.md that follows the comment
/// `<!-- ci: NAME -->`: examples CI runs as written (against a test server
/// in place of 127.0.0.1:50051).
fn readme_block(name: &str) -> String {
    let readme = include_str!("../../README.md");
    let tag = format!("<!-- ci: {name} -->");
    let after = readme
        .split_once(&tag)
        .unwrap_or_else(|| panic!("README.md has no {tag}"))
        .1;
    let body = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("no ```sh block after {tag}"))
        .0;
    body.to_string()
}

/// Runs a README block with `sh -e` against `server`; its stdout.
fn run_readme_block(name: &str, server: &Server, sshd: &Sshd, path: &str) -> String {
    // The jump host example goes through this machine's sshd, which listens
    // on a test port rather than 22.
    let script = readme_block(name)
        .replace("127.0.0.1:50051", &server.addr.to_string())
        .replace("\"127.0.0.1:22\"", &format!("\"127.0.0.1:{}\"", sshd.port));
    let out = Command::new("sh")
        .args(["-ec", &script])
        .env("PATH", path)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A PATH on which `grpcurl` runs: the private tools dir that
/// `scripts/setup-debian --test` fills, then the inherited PATH.
fn grpcurl_path() -> String {
    let cache =
        std::env::var("HOSTSCAN_TEST_CACHE").unwrap_or_else(|_| "/var/cache/hostscan-test".into());
    let path = format!(
        "{cache}/tools/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let found = Command::new("sh")
        .args(["-c", "grpcurl --version"])
        .env("PATH", &path)
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "grpcurl not found: run `sudo scripts/setup-debian --test` (it installs grpcurl 1.8.6 into {cache}/tools)"
    );
    path
}

#[tokio::test]
async fn the_readme_grpcurl_examples_work() {
    let path = grpcurl_path();
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server = server_for(&keys, &sshd, &db).await;
    // A scan exists before the examples run, as after the quick start's
    // `hostscan scan`: the examples must watch the scan they started.
    let out = hostscan(&["scan", "127.0.0.1", "--server", &server.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let output = run_readme_block("api", &server, &sshd, &path);
    let expected = [
        "grpc.health.v1.Health",
        "hostscan.v1.ScanService",
        "scan 2\n",
        "\"scanId\": \"2\"",
        "\"status\": \"SCAN_STATUS_COMPLETED\"",
        "\"id\": \"2\"",
        "\"totalSize\": \"2\"",
        "\"hostname\": \"127.0.0.1\"",
        // DiffScans: scan 2 against the previous completed scan, 1.
        "\"base\": {",
        "\"scanId\": \"1\"",
        "\"comparedSections\": [",
        "\"DIFF_SECTION_OS\"",
        "\"reason\": \"the base scan is a quick scan\"",
        "\"status\": \"SERVING\"",
        "scan 3 through a jump host\n",
    ];
    let mut rest = output.as_str();
    for want in expected {
        let at = rest
            .find(want)
            .unwrap_or_else(|| panic!("{want:?} missing (in order) from:\n{output}"));
        rest = &rest[at + want.len()..];
    }
    // The scan through the jump host, watched to its end (its first event
    // may already be the terminal one).
    assert!(
        rest.contains(&format!("\"proxyJump\": \"127.0.0.1:{}\"", sshd.port))
            && rest.contains("\"status\": \"SCAN_STATUS_COMPLETED\""),
        "{rest}"
    );
}

/// The README's TLS block, line by line: lines that present a client
/// certificate go to an mTLS server, the others to a TLS one.
#[tokio::test]
async fn the_readme_grpcurl_tls_examples_work() {
    let path = grpcurl_path();
    let pki = crate::support::tls::Pki::new("readme");
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server_with = |mtls: bool| {
        let mut args = crate::e2e::server_args(&keys, &sshd, &[]);
        args.extend(pki.server_args(mtls));
        args
    };
    let tls = Server::start(&db.url, &server_with(false)).await;
    let mtls = Server::start(&db.url, &server_with(true)).await;
    let lines: Vec<String> = readme_block("tls").lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "README examples changed: update this test");
    let mut outputs = Vec::new();
    for line in &lines {
        // Lines that present a client certificate go to the mTLS server.
        let server = if line.contains(" -cert ") {
            &mtls
        } else {
            &tls
        };
        let command = line.replace("hostscan.example.org:50051", &server.addr.to_string());
        let out = Command::new("sh")
            .args(["-c", &command])
            .current_dir(pki.dir.path())
            .env("PATH", &path)
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
        outputs[0].contains("hostscan.v1.ScanService"),
        "{}",
        outputs[0]
    );
    assert!(
        outputs[1].contains("\"status\": \"SERVING\""),
        "{}",
        outputs[1]
    );
    // An empty database: proto3 JSON leaves out zero values.
    let page: serde_json::Value = serde_json::from_str(&outputs[2]).expect("JSON");
    assert!(page.is_object() && page.get("scans").is_none(), "{page}");
    // The same ListScans without a client certificate fails the handshake.
    let refused = lines[2]
        .replace(" -cert client.pem -key client-key.pem", "")
        .replace("hostscan.example.org:50051", &mtls.addr.to_string());
    let out = Command::new("sh")
        .args(["-c", &refused])
        .current_dir(pki.dir.path())
        .env("PATH", &path)
        .output()
        .expect("sh");
    assert!(!out.status.success(), "mTLS without a client certificate");
}

/// The README's WatchScans feed: a new scan from PENDING to COMPLETED.
#[tokio::test]
async fn the_readme_watchscans_feed_works() {
    let path = grpcurl_path();
    let db = TestDb::new().await;
    let keys = Keys::generate();
    let sshd = Sshd::start(&keys, Options::default()).await;
    let server = server_for(&keys, &sshd, &db).await;
    let dir = temp_dir("hostscan-feed-");
    let script = readme_block("feed").replace("127.0.0.1:50051", &server.addr.to_string());
    let out = Command::new("sh")
        .args(["-ec", &script])
        .current_dir(dir.path())
        .env("PATH", &path)
        .output()
        .expect("sh");
    let feed = text(&out.stdout);
    assert!(
        out.status.success(),
        "{script}\n{feed}\n{}",
        text(&out.stderr)
    );
    let pending = feed.find("SCAN_STATUS_PENDING").unwrap_or(usize::MAX);
    let completed = feed.rfind("SCAN_STATUS_COMPLETED").unwrap_or(0);
    assert!(pending < completed, "{feed}");
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
    // prune, once: nothing is old in a new database.
    let out = hostscan(&[
        "prune",
        "--older-than",
        "90d",
        "--dry-run",
        "--database-url",
        &url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("would delete 0 scans finished more than 90d ago"),
        "{}",
        text(&out.stdout)
    );
    let out = hostscan(&["prune", "--older-than", "5s", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("shorter than a minute"),
        "{}",
        text(&out.stderr)
    );
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
