//! OpenSSH `known_hosts` files: lookup and append.
//!
//! Owns the file format only (host patterns, `[host]:port`, hashed `|1|`
//! entries, `@revoked`, `@cert-authority`, any whitespace). Decisions about
//! what a lookup means belong to `hostkey`. Parsing is pure; file access is in
//! the two small functions at the bottom.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Algorithm, PublicKey};

/// What a known_hosts file says about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A line for this host holds exactly this key.
    Found,
    /// No line names this host.
    Unknown,
    /// Lines name this host, none with this key. `line` is the first such
    /// line (1-based), `known` the fingerprints recorded there.
    Changed { line: usize, known: Vec<String> },
    /// The key is marked `@revoked`.
    Revoked { line: usize },
}

/// One usable line of a known_hosts file.
struct Entry<'a> {
    line: usize,
    marker: Option<&'a str>,
    hosts: &'a str,
    key: Option<PublicKey>,
}

fn entries(contents: &str) -> impl Iterator<Item = Entry<'_>> {
    contents.lines().enumerate().filter_map(|(i, raw)| {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_ascii_whitespace();
        let mut first = fields.next()?;
        let mut marker = None;
        if first.starts_with('@') {
            marker = Some(first);
            first = fields.next()?;
        }
        let key_type = fields.next()?;
        let blob = fields.next()?;
        let key = PublicKey::from_openssh(&format!("{key_type} {blob}")).ok();
        Some(Entry {
            line: i + 1,
            marker,
            hosts: first,
            key,
        })
    })
}

/// The name OpenSSH looks up: `host` on port 22, `[host]:port` otherwise.
pub fn host_port_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Looks up `key` for `host:port` in the text of a known_hosts file.
pub fn lookup(contents: &str, host: &str, port: u16, key: &PublicKey) -> Lookup {
    let name = host_port_name(host, port);
    let mut found = false;
    let mut changed: Option<(usize, Vec<String>)> = None;
    for entry in entries(contents) {
        let Some(recorded) = &entry.key else { continue };
        if !hosts_match(entry.hosts, &name) {
            continue;
        }
        let same = recorded.key_data() == key.key_data();
        match entry.marker {
            Some("@revoked") if same => return Lookup::Revoked { line: entry.line },
            Some(_) => continue,
            None if same => found = true,
            None => {
                let fp = recorded.fingerprint(Default::default()).to_string();
                changed
                    .get_or_insert_with(|| (entry.line, Vec::new()))
                    .1
                    .push(fp);
            }
        }
    }
    match (found, changed) {
        (true, _) => Lookup::Found,
        (false, Some((line, known))) => Lookup::Changed { line, known },
        (false, None) => Lookup::Unknown,
    }
}

/// Key algorithms recorded for `host:port`, in file order, so the client can
/// ask the server for a key type it already knows.
pub fn known_algorithms(contents: &str, host: &str, port: u16) -> Vec<Algorithm> {
    let name = host_port_name(host, port);
    let mut out: Vec<Algorithm> = Vec::new();
    for entry in entries(contents) {
        if entry.marker.is_some() || !hosts_match(entry.hosts, &name) {
            continue;
        }
        if let Some(key) = entry.key {
            let alg = key.algorithm();
            if !out.contains(&alg) {
                out.push(alg);
            }
        }
    }
    out
}

/// The CA keys of `@cert-authority` lines whose patterns match `host:port`,
/// with their line numbers, in file order.
pub fn cert_authorities(contents: &str, host: &str, port: u16) -> Vec<(usize, PublicKey)> {
    let name = host_port_name(host, port);
    entries(contents)
        .filter(|e| e.marker == Some("@cert-authority") && hosts_match(e.hosts, &name))
        .filter_map(|e| Some((e.line, e.key?)))
        .collect()
}

/// The first `@revoked` line for `host:port` that holds `key`, if any.
pub fn revoked(contents: &str, host: &str, port: u16, key: &KeyData) -> Option<usize> {
    let name = host_port_name(host, port);
    entries(contents)
        .filter(|e| e.marker == Some("@revoked") && hosts_match(e.hosts, &name))
        .find(|e| e.key.as_ref().is_some_and(|k| k.key_data() == key))
        .map(|e| e.line)
}

/// A key in OpenSSH form without comment: "ssh-ed25519 AAAA...".
pub fn openssh_key(key: &PublicKey) -> String {
    let blob = BASE64.encode(key.to_bytes().unwrap_or_default());
    format!("{} {}", key.algorithm().as_str(), blob)
}

/// The line to append to pin `key` for `host:port`.
pub fn entry_line(host: &str, port: u16, key: &PublicKey) -> String {
    format!("{} {}\n", host_port_name(host, port), openssh_key(key))
}

/// OpenSSH pattern-list semantics: comma-separated patterns with `*`/`?`,
/// `!pattern` negates (a negated match rejects the whole line), `|1|salt|hash`
/// is a hashed name.
fn hosts_match(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(hashed) = pattern.strip_prefix("|1|") {
            if hashed_match(hashed, name) {
                matched = true;
            }
        } else if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(&negated.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
                return false;
            }
        } else if wildcard_match(&pattern.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
            matched = true;
        }
    }
    matched
}

fn hashed_match(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (BASE64.decode(salt), BASE64.decode(hash)) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

/// Glob match with `*` (any run) and `?` (one char), iterative with
/// backtracking to the last star: linear-ish, no recursion.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// Reads a known_hosts file; a missing file reads as empty.
pub async fn read(path: &Path) -> std::io::Result<String> {
    match tokio::fs::read_to_string(path).await {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// Appends one line, creating the file (and its directory) if needed, after a
/// newline if the file does not end with one.
pub async fn append(path: &Path, line: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let existing = read(path).await?;
    let mut text = String::new();
    if !existing.is_empty() && !existing.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    file.write_all(text.as_bytes()).await?;
    file.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).expect("test key")
    }

    #[test]
    fn plain_port_and_tabs() {
        let file =
            format!("# comment\n\n[localhost]:2222\t{ED}\nexample.org,10.0.0.1 {ED2} me@x\n");
        assert_eq!(lookup(&file, "localhost", 2222, &key(ED)), Lookup::Found);
        assert_eq!(lookup(&file, "localhost", 22, &key(ED)), Lookup::Unknown);
        assert_eq!(lookup(&file, "10.0.0.1", 22, &key(ED2)), Lookup::Found);
        match lookup(&file, "example.org", 22, &key(ED)) {
            Lookup::Changed { line, known } => {
                assert_eq!(line, 4);
                assert_eq!(known.len(), 1);
                assert!(known[0].starts_with("SHA256:"));
            }
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    #[test]
    fn hashed_entries() {
        // A hashed entry for "example.com", from russh's own test data.
        let file = format!("|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= {ED2}\n");
        assert_eq!(lookup(&file, "example.com", 22, &key(ED2)), Lookup::Found);
        assert_eq!(lookup(&file, "localhost", 22, &key(ED2)), Lookup::Unknown);
    }

    #[test]
    fn wildcards_negation_and_markers() {
        let file = format!(
            "*.example.org,!bad.example.org {ED}\n@revoked * {ED2}\n@cert-authority *.corp {ED}\n"
        );
        assert_eq!(lookup(&file, "a.example.org", 22, &key(ED)), Lookup::Found);
        assert_eq!(
            lookup(&file, "bad.example.org", 22, &key(ED)),
            Lookup::Unknown
        );
        assert_eq!(lookup(&file, "x.corp", 22, &key(ED)), Lookup::Unknown);
        assert_eq!(
            lookup(&file, "anything", 22, &key(ED2)),
            Lookup::Revoked { line: 2 }
        );
        assert!(wildcard_match("h?st*", "host-1"));
        assert!(!wildcard_match("h?st", "hoost"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn cert_authorities_and_revocations() {
        let file = format!(
            "@cert-authority *.corp,!bad.corp {ED}\n@cert-authority [10.0.0.1]:2222 {ED2}\n@revoked x.corp {ED2}\n"
        );
        let cas = cert_authorities(&file, "a.corp", 22);
        assert_eq!(cas.len(), 1);
        assert_eq!(cas[0].0, 1);
        assert!(cert_authorities(&file, "bad.corp", 22).is_empty());
        assert_eq!(cert_authorities(&file, "10.0.0.1", 2222).len(), 1);
        assert!(cert_authorities(&file, "10.0.0.1", 22).is_empty());
        assert_eq!(revoked(&file, "x.corp", 22, key(ED2).key_data()), Some(3));
        assert_eq!(revoked(&file, "y.corp", 22, key(ED2).key_data()), None);
        // A CA line is not a host key.
        assert_eq!(lookup(&file, "a.corp", 22, &key(ED)), Lookup::Unknown);
    }

    #[test]
    fn entry_line_round_trips() {
        let line = entry_line("127.0.0.1", 2200, &key(ED));
        assert!(line.starts_with("[127.0.0.1]:2200 ssh-ed25519 AAAA"));
        assert_eq!(lookup(&line, "127.0.0.1", 2200, &key(ED)), Lookup::Found);
        assert_eq!(
            known_algorithms(&line, "127.0.0.1", 2200),
            vec![Algorithm::Ed25519]
        );
    }

    #[test]
    fn garbage_never_panics() {
        for junk in [
            "@",
            "@revoked",
            "|1|",
            "|1|x|y k v",
            "a b c",
            "[h]:1 ssh-rsa !!!",
        ] {
            assert_eq!(lookup(junk, "h", 1, &key(ED)), Lookup::Unknown);
        }
    }
}
