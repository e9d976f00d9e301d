//! Logging in: key files (plain or encrypted), their certificates
//! (`KEY-cert.pub` beside a key, or `CertificateFile`), and an ssh-agent
//! (its keys and its certificates).
//!
//! Owns loading and decrypting keys (`Keyring`, which decrypts each file
//! once), what is offered to a host (`Identities`) and in which order, and
//! the publickey exchange itself (`authenticate`). Passphrases live in
//! `Secret`, which zeroizes itself and never prints; they are read from a
//! file or a terminal, never from a command line, and never logged.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh::client::{self, AuthResult};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{self, Certificate, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use zeroize::Zeroizing;

use super::{SshError, Target};

/// A passphrase. Zeroized on drop; `Debug` prints `<redacted>`.
#[derive(Clone)]
pub struct Secret(Arc<Zeroizing<String>>);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(Arc::new(Zeroizing::new(value)))
    }

    /// Reads a passphrase file: its first line, without the line ending.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        );
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        Ok(Self::new(line.to_string()))
    }

    fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where passphrases for encrypted keys come from.
#[derive(Debug, Clone)]
pub struct Passphrase {
    /// From a file (one passphrase for every encrypted key).
    pub secret: Option<Secret>,
    /// Ask on the terminal (probe, when stdin is a TTY and no file is given).
    pub prompt: bool,
    /// The setting to name when a key needs a passphrase we do not have,
    /// e.g. `--passphrase-file`.
    pub setting: &'static str,
}

impl Passphrase {
    pub fn none(setting: &'static str) -> Self {
        Self {
            secret: None,
            prompt: false,
            setting,
        }
    }
}

/// Why a key file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{path} is encrypted and needs a passphrase: give it with {setting} FILE (hostscan never takes a passphrase on the command line)"
    )]
    NeedsPassphrase { path: String, setting: &'static str },
    #[error("cannot decrypt {path} with the passphrase from {setting}: {detail}")]
    WrongPassphrase {
        path: String,
        setting: &'static str,
        detail: String,
    },
    #[error("cannot load key {path}: {detail}")]
    Unusable { path: String, detail: String },
}

/// A private key loaded from a file, with its certificate if one is beside
/// it. Debug shows the path, never the key.
#[derive(Clone)]
pub struct ClientKey {
    pub path: PathBuf,
    pub key: Arc<PrivateKey>,
    /// `PATH-cert.pub` or a matching `CertificateFile`: offered before the
    /// plain key.
    pub cert: Option<Arc<Certificate>>,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientKey({}{}, <redacted>)",
            self.path.display(),
            if self.cert.is_some() {
                " + certificate"
            } else {
                ""
            }
        )
    }
}

impl ClientKey {
    /// Loads an unencrypted key file (and `PATH-cert.pub` if present).
    pub fn load(path: &Path) -> Result<Self, SshError> {
        match load_key(path, &Passphrase::none("a passphrase file"), &[]) {
            Ok(Loaded::Key(k)) => Ok(k),
            Ok(Loaded::InAgent(_)) => {
                Err(SshError::Key(format!("{} is encrypted", path.display())))
            }
            Err(e) => Err(SshError::Key(e.to_string())),
        }
    }
}

/// A key file, as far as hostscan could use it.
#[derive(Debug, Clone)]
pub enum Loaded {
    Key(ClientKey),
    /// Encrypted, no passphrase, but the agent holds this key: it is used
    /// through the agent.
    InAgent(PublicKey),
}

/// `PATH-cert.pub`, the name ssh looks for beside a key.
fn companion_cert(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-cert.pub");
    PathBuf::from(name)
}

fn public_of_encrypted(text: &str, path: &Path) -> Option<PublicKey> {
    if let Ok(k) = PrivateKey::from_openssh(text) {
        return Some(k.public_key().clone());
    }
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    keys::load_public_key(PathBuf::from(pub_path)).ok()
}

/// Loads one key file: decrypts it with `passphrase` if it is encrypted,
/// or hands it to the agent if the agent holds it (`agent_keys`).
pub fn load_key(
    path: &Path,
    passphrase: &Passphrase,
    agent_keys: &[KeyData],
) -> Result<Loaded, KeyError> {
    let shown = path.display().to_string();
    let unusable = |detail: String| KeyError::Unusable {
        path: shown.clone(),
        detail,
    };
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| unusable(e.to_string()))?);
    if text.contains("BEGIN EC PRIVATE KEY") && text.contains("ENCRYPTED") {
        return Err(unusable(
            "encrypted PEM EC keys are not supported; convert it with `ssh-keygen -p -f KEY` (OpenSSH format)".into(),
        ));
    }
    // PKCS#8 and legacy PEM say so in the text; russh reports an encrypted
    // OpenSSH key as KeyIsEncrypted.
    let encrypted_pem = text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED");
    let plain = match encrypted_pem {
        true => Err(keys::Error::KeyIsEncrypted),
        false => keys::decode_secret_key(&text, None),
    };
    let key = match plain {
        Ok(k) => k,
        Err(keys::Error::KeyIsEncrypted) => {
            // As ssh: a key the agent holds is used through the agent,
            // without asking for its passphrase.
            if let Some(p) =
                public_of_encrypted(&text, path).filter(|p| agent_keys.contains(p.key_data()))
            {
                return Ok(Loaded::InAgent(p));
            }
            decrypt(&text, path, passphrase)?
        }
        Err(e) => return Err(unusable(e.to_string())),
    };
    let cert = attach_cert(&key, &companion_cert(path));
    Ok(Loaded::Key(ClientKey {
        path: path.to_path_buf(),
        key: Arc::new(key),
        cert,
    }))
}

fn decrypt(text: &str, path: &Path, passphrase: &Passphrase) -> Result<PrivateKey, KeyError> {
    let shown = path.display().to_string();
    if let Some(secret) = &passphrase.secret {
        return keys::decode_secret_key(text, Some(secret.expose())).map_err(|e| {
            KeyError::WrongPassphrase {
                path: shown,
                setting: passphrase.setting,
                detail: e.to_string(),
            }
        });
    }
    if passphrase.prompt {
        for _ in 0..3 {
            let answer =
                rpassword::prompt_password(format!("Enter passphrase for key '{shown}': "))
                    .map(Secret::new)
                    .map_err(|e| KeyError::Unusable {
                        path: shown.clone(),
                        detail: format!("cannot read a passphrase from the terminal: {e}"),
                    })?;
            match keys::decode_secret_key(text, Some(answer.expose())) {
                Ok(k) => return Ok(k),
                Err(_) => eprintln!("Bad passphrase."),
            }
        }
        return Err(KeyError::Unusable {
            path: shown,
            detail: "three wrong passphrases".into(),
        });
    }
    Err(KeyError::NeedsPassphrase {
        path: shown,
        setting: passphrase.setting,
    })
}

/// The certificate at `cert_path` if it exists and is for `key`.
fn attach_cert(key: &PrivateKey, cert_path: &Path) -> Option<Arc<Certificate>> {
    if !cert_path.is_file() {
        return None;
    }
    match keys::load_openssh_certificate(cert_path) {
        Ok(cert) if cert.public_key() == key.public_key().key_data() => {
            if let Some(problem) = validity_problem(&cert, now()) {
                tracing::warn!(certificate = %cert_path.display(), "{problem}; it will not be offered");
            }
            Some(Arc::new(cert))
        }
        Ok(_) => {
            tracing::warn!(certificate = %cert_path.display(), "certificate is for another key; ignored");
            None
        }
        Err(e) => {
            tracing::warn!(certificate = %cert_path.display(), error = %e, "unreadable certificate; ignored");
            None
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || "forever".into(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// Why a certificate is not valid at `now` (seconds since the epoch), if
/// it is not.
pub fn validity_problem(cert: &Certificate, now: u64) -> Option<String> {
    if now < cert.valid_after() {
        Some(format!(
            "certificate {:?} is not valid before {}",
            cert.key_id(),
            utc(cert.valid_after())
        ))
    } else if now >= cert.valid_before() {
        Some(format!(
            "certificate {:?} expired at {}",
            cert.key_id(),
            utc(cert.valid_before())
        ))
    } else {
        None
    }
}

/// Decrypts each key file once, on first use, and keeps it.
pub struct Keyring {
    passphrase: Passphrase,
    /// Public keys the agent held at start-up: encrypted files whose key is
    /// among them are used through the agent.
    agent_keys: Vec<KeyData>,
    loaded: Mutex<HashMap<PathBuf, Loaded>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("passphrase", &self.passphrase)
            .field("loaded", &self.loaded.lock().map(|l| l.len()).unwrap_or(0))
            .finish()
    }
}

impl Keyring {
    pub fn new(passphrase: Passphrase, agent_keys: Vec<KeyData>) -> Self {
        Self {
            passphrase,
            agent_keys,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The key at `path`, loading (and decrypting) it on first use. May
    /// block (file I/O, key derivation, a terminal prompt).
    pub fn get(&self, path: &Path) -> Result<Loaded, KeyError> {
        if let Some(k) = self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
        {
            return Ok(k.clone());
        }
        let loaded = load_key(path, &self.passphrase, &self.agent_keys)?;
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_path_buf(), loaded.clone());
        Ok(loaded)
    }

    /// True if `path` was loaded before (no blocking needed).
    pub fn has(&self, path: &Path) -> bool {
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(path)
    }
}

/// What is offered to one host, in order: the agent's identities (only
/// those of `only`, when set), then each key file — its certificate first,
/// then the plain key.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    pub keys: Vec<ClientKey>,
    /// `CertificateFile`s whose private key only the agent holds.
    pub agent_certificates: Vec<Arc<Certificate>>,
    /// `IdentitiesOnly yes`: offer agent identities only for these keys.
    pub only: Option<Vec<KeyData>>,
}

impl Identities {
    /// Plain key files, every agent identity allowed.
    pub fn from_keys(keys: impl IntoIterator<Item = ClientKey>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Builds what to offer from key files and certificate files: each
    /// certificate goes with the loaded key it certifies, else with the
    /// agent's key.
    pub fn assemble(
        loaded: Vec<Loaded>,
        certificates: &[PathBuf],
        identities_only: bool,
    ) -> Result<Self, KeyError> {
        let mut out = Self::default();
        let mut allowed: Vec<KeyData> = Vec::new();
        for l in loaded {
            match l {
                Loaded::Key(k) => {
                    allowed.push(k.key.public_key().key_data().clone());
                    if !out
                        .keys
                        .iter()
                        .any(|o| o.key.public_key() == k.key.public_key())
                    {
                        out.keys.push(k);
                    }
                }
                Loaded::InAgent(p) => allowed.push(p.key_data().clone()),
            }
        }
        for path in certificates {
            let cert = keys::load_openssh_certificate(path).map_err(|e| KeyError::Unusable {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
            if let Some(problem) = validity_problem(&cert, now()) {
                tracing::warn!(certificate = %path.display(), "{problem}; it will not be offered");
            }
            allowed.push(cert.public_key().clone());
            match out
                .keys
                .iter_mut()
                .find(|k| k.key.public_key().key_data() == cert.public_key())
            {
                Some(k) => k.cert = Some(Arc::new(cert)),
                None => out.agent_certificates.push(Arc::new(cert)),
            }
        }
        if identities_only {
            out.only = Some(allowed);
        }
        Ok(out)
    }

    /// True when there is nothing to offer but the agent (or nothing).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.agent_certificates.is_empty()
    }
}

/// An ssh-agent socket. Each login opens its own connection to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub socket: PathBuf,
}

/// SSH_AGENTC_REQUEST_IDENTITIES / SSH_AGENT_IDENTITIES_ANSWER.
const AGENT_REQUEST_IDENTITIES: u8 = 11;
const AGENT_IDENTITIES_ANSWER: u8 = 12;

impl Agent {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// Asks the agent for its identities without a runtime (start-up
    /// checks), within `timeout`: the keys it holds, certificates as their
    /// keys. Errors say what went wrong, for a message naming the setting.
    pub fn identities_blocking(&self, timeout: Duration) -> Result<Vec<KeyData>, String> {
        let path = self.socket.display();
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket)
            .map_err(|e| format!("cannot connect to the agent at {path}: {e}"))?;
        s.set_read_timeout(Some(timeout)).ok();
        s.set_write_timeout(Some(timeout)).ok();
        s.write_all(&[0, 0, 0, 1, AGENT_REQUEST_IDENTITIES])
            .map_err(|e| format!("the agent at {path} does not answer: {e}"))?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len)
            .map_err(|e| format!("the agent at {path} does not answer: {e}"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > 256 * 1024 {
            return Err(format!("the agent at {path} sent a bad answer"));
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)
            .map_err(|e| format!("the agent at {path} does not answer: {e}"))?;
        parse_identities(&body).ok_or_else(|| format!("the agent at {path} sent a bad answer"))
    }

    async fn connect(&self) -> Result<AgentClient<tokio::net::UnixStream>, String> {
        AgentClient::connect_uds(&self.socket)
            .await
            .map_err(|e| format!("agent {} unavailable: {e}", self.socket.display()))
    }
}

/// The keys in an IDENTITIES_ANSWER body (certificates as their keys).
fn parse_identities(body: &[u8]) -> Option<Vec<KeyData>> {
    fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (r.get(..n)?, r.get(n..)?);
        *r = tail;
        Some(head)
    }
    fn u32_at(r: &mut &[u8]) -> Option<usize> {
        let b = take(r, 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let (&kind, mut r) = body.split_first()?;
    if kind != AGENT_IDENTITIES_ANSWER {
        return None;
    }
    let n = u32_at(&mut r)?;
    let mut out = Vec::new();
    for _ in 0..n.min(1024) {
        let len = u32_at(&mut r)?;
        let blob = take(&mut r, len)?;
        let len = u32_at(&mut r)?;
        take(&mut r, len)?;
        if let Ok(k) = PublicKey::from_bytes(blob) {
            out.push(k.key_data().clone());
        } else if let Ok(c) = Certificate::from_bytes(blob) {
            out.push(c.public_key().clone());
        }
    }
    Some(out)
}

/// What was tried, for the failure message.
#[derive(Default)]
struct Tried {
    keys: usize,
    certificates: usize,
    agent: usize,
    notes: Vec<String>,
}

impl fmt::Display for Tried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let count = |n: usize, one: &str, many: &str| match n {
            1 => format!("1 {one}"),
            n => format!("{n} {many}"),
        };
        if self.agent > 0 {
            parts.push(count(self.agent, "agent identity", "agent identities"));
        }
        if self.certificates > 0 {
            parts.push(count(self.certificates, "certificate", "certificates"));
        }
        if self.keys > 0 {
            parts.push(count(self.keys, "key", "keys"));
        }
        if parts.is_empty() {
            parts.push("no keys: none configured (--ssh-key, ~/.ssh/id_*, an agent)".into());
        }
        write!(f, "{}", parts.join(", "))?;
        for n in &self.notes {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

/// Logs in as `target.user` with the first identity the server accepts:
/// the agent's (certificates and keys), then each key file's certificate
/// and plain key. A key the agent already offered is not offered again.
pub(super) async fn authenticate<H>(
    handle: &mut client::Handle<H>,
    target: &Target,
    ids: &Identities,
    agent: Option<&Agent>,
) -> Result<(), SshError>
where
    H: client::Handler<Error = SshError>,
{
    let mut tried = Tried::default();
    let mut rsa_hash: Option<Option<HashAlg>> = None;
    let mut offered: Vec<KeyData> = Vec::new();
    let user = target.user.clone();
    let time = now();
    let lost = |e: russh::Error, tried: &Tried| -> SshError {
        match e {
            russh::Error::Disconnect | russh::Error::HUP | russh::Error::SendError => {
                SshError::AuthFailed {
                    target: target.to_string(),
                    tried: format!(
                        "{tried}; the server closed the connection (too many attempts for its MaxAuthTries?)"
                    ),
                }
            }
            other => other.into(),
        }
    };

    macro_rules! rsa_hash_for {
        ($alg:expr) => {
            if $alg.is_rsa() {
                if rsa_hash.is_none() {
                    rsa_hash = Some(
                        handle
                            .best_supported_rsa_hash()
                            .await
                            .map_err(|e| lost(e, &tried))?
                            .flatten(),
                    );
                }
                rsa_hash.flatten()
            } else {
                None
            }
        };
    }

    if let Some(agent) = agent {
        match agent.connect().await {
            Err(note) => tried.notes.push(note),
            Ok(mut client) => {
                let identities = match client.request_identities().await {
                    Ok(ids) => ids,
                    Err(e) => {
                        tried
                            .notes
                            .push(format!("agent {}: {e}", agent.socket.display()));
                        Vec::new()
                    }
                };
                // Certificates first, as ssh offers them.
                let (certs, plain): (Vec<_>, Vec<_>) = identities
                    .into_iter()
                    .partition(|i| matches!(i, AgentIdentity::Certificate { .. }));
                for identity in certs.into_iter().chain(plain) {
                    let key_data = identity.public_key().key_data().clone();
                    if let Some(only) = &ids.only
                        && !only.contains(&key_data)
                    {
                        continue;
                    }
                    let result = match identity {
                        AgentIdentity::Certificate { certificate, .. } => {
                            if let Some(problem) = validity_problem(&certificate, time) {
                                tried.notes.push(format!("agent {problem}"));
                                continue;
                            }
                            let hash = rsa_hash_for!(certificate.algorithm());
                            tried.agent += 1;
                            handle
                                .authenticate_certificate_with(
                                    user.clone(),
                                    certificate,
                                    hash,
                                    &mut client,
                                )
                                .await
                        }
                        AgentIdentity::PublicKey { key, .. } => {
                            let hash = rsa_hash_for!(key.algorithm());
                            tried.agent += 1;
                            offered.push(key_data.clone());
                            handle
                                .authenticate_publickey_with(user.clone(), key, hash, &mut client)
                                .await
                        }
                    };
                    match result {
                        Ok(AuthResult::Success) => {
                            tracing::debug!(target = %target, "authenticated with an agent identity");
                            return Ok(());
                        }
                        Ok(AuthResult::Failure { .. }) => {}
                        Err(russh::AgentAuthError::Send(_)) => {
                            return Err(lost(russh::Error::SendError, &tried));
                        }
                        Err(russh::AgentAuthError::Key(e)) => {
                            tried.notes.push(format!("the agent could not sign: {e}"));
                        }
                    }
                }
                for cert in &ids.agent_certificates {
                    if let Some(problem) = validity_problem(cert, time) {
                        tried.notes.push(problem);
                        continue;
                    }
                    let hash = rsa_hash_for!(cert.algorithm());
                    tried.certificates += 1;
                    match handle
                        .authenticate_certificate_with(
                            user.clone(),
                            (**cert).clone(),
                            hash,
                            &mut client,
                        )
                        .await
                    {
                        Ok(AuthResult::Success) => return Ok(()),
                        Ok(AuthResult::Failure { .. }) => {}
                        Err(russh::AgentAuthError::Send(_)) => {
                            return Err(lost(russh::Error::SendError, &tried));
                        }
                        Err(russh::AgentAuthError::Key(e)) => {
                            tried
                                .notes
                                .push(format!("the agent could not sign for a certificate: {e}"));
                        }
                    }
                }
            }
        }
    }

    for key in &ids.keys {
        if let Some(cert) = &key.cert {
            match validity_problem(cert, time) {
                Some(problem) => tried.notes.push(problem),
                None => {
                    tried.certificates += 1;
                    match handle
                        .authenticate_openssh_cert(user.clone(), key.key.clone(), (**cert).clone())
                        .await
                        .map_err(|e| lost(e, &tried))?
                    {
                        AuthResult::Success => {
                            tracing::debug!(target = %target, key = %key.path.display(), "authenticated with a certificate");
                            return Ok(());
                        }
                        AuthResult::Failure { .. } => {
                            tracing::debug!(target = %target, key = %key.path.display(), "certificate rejected");
                        }
                    }
                }
            }
        }
        if offered.contains(key.key.public_key().key_data()) {
            continue;
        }
        let hash = rsa_hash_for!(key.key.algorithm());
        tried.keys += 1;
        let with_hash = PrivateKeyWithHashAlg::new(key.key.clone(), hash);
        match handle
            .authenticate_publickey(user.clone(), with_hash)
            .await
            .map_err(|e| lost(e, &tried))?
        {
            AuthResult::Success => {
                tracing::debug!(target = %target, key = %key.path.display(), "authenticated");
                return Ok(());
            }
            AuthResult::Failure { .. } => {
                tracing::debug!(target = %target, key = %key.path.display(), "key rejected");
            }
        }
    }
    Err(SshError::AuthFailed {
        target: target.to_string(),
        tried: tried.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let p = Passphrase {
            secret: Some(s),
            prompt: false,
            setting: "--passphrase-file",
        };
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn passphrase_file_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("p");
        std::fs::write(&f, "correct horse\nignored\n").expect("write");
        assert_eq!(
            Secret::from_file(&f).expect("read").expose(),
            "correct horse"
        );
        std::fs::write(&f, "").expect("write");
        assert!(Secret::from_file(&f).is_err());
    }

    #[test]
    fn agent_answers_parse_without_panics() {
        assert_eq!(parse_identities(&[12, 0, 0, 0, 0]), Some(vec![]));
        assert_eq!(parse_identities(&[5]), None);
        assert_eq!(parse_identities(&[]), None);
        assert_eq!(parse_identities(&[12, 0, 0, 0, 2, 0, 0, 0, 9]), None);
    }

    proptest::proptest! {
        #[test]
        fn agent_answer_parser_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_identities(&body);
        }
    }

    #[test]
    fn tried_reads_well() {
        let t = Tried {
            keys: 2,
            certificates: 1,
            agent: 0,
            notes: vec!["certificate \"x\" expired at 2020-01-02 00:00:00 UTC".into()],
        };
        assert_eq!(
            t.to_string(),
            "1 certificate, 2 keys; certificate \"x\" expired at 2020-01-02 00:00:00 UTC"
        );
        assert_eq!(
            Tried::default().to_string(),
            "no keys: none configured (--ssh-key, ~/.ssh/id_*, an agent)"
        );
    }
}
