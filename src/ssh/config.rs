//! OpenSSH client configuration (`ssh_config(5)`): the subset hostscan uses,
//! resolved into a typed [`HostConfig`] per host.
//!
//! Owns the file format and OpenSSH's resolution rules: `Host` patterns
//! (`*`, `?`, `!`), `Match all|host|originalhost|user|localuser` (with `!`),
//! `Include` (globs, `~`, relative to `~/.ssh` or `/etc/ssh`, at most 16
//! deep, conditional when inside a block), `Key value` and `Key=value`,
//! quotes, comments, and **the first obtained value wins** (`IdentityFile`
//! and `CertificateFile` accumulate). Keywords hostscan does not use are
//! ignored, as OpenSSH ignores what it does not need. Values of the keywords
//! it does use are checked when the file is read, in every block, so a typo
//! fails at start-up rather than on the one host it applies to.
//!
//! Does no network I/O and knows nothing of keys or connections: `route`
//! turns a `HostConfig` into a connection plan.
//!
//! Why not a crate: `ssh2-config` (MIT, maintained; 0.7.1 checked in
//! November 2026) is the one ssh_config parser with real upkeep, but it has
//! no `Match` blocks, no `%h`/`%r`/`%p` token expansion, and hands
//! `StrictHostKeyChecking`, `UserKnownHostsFile` and `IdentitiesOnly` back
//! only as untyped "unsupported" strings; every one of those decides where
//! hostscan connects or which host key it trusts. Wrapping it would have
//! left us writing the same resolution rules around it.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::hostkey::HostKeyPolicy;
use super::jump;
use super::known_hosts::wildcard_match;

/// How deep `Include` may nest (OpenSSH's limit).
const MAX_INCLUDE_DEPTH: usize = 16;

/// A configuration file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct ConfigFileError {
    pub file: String,
    /// 1-based; 0 when the file itself could not be read.
    pub line: usize,
    pub message: String,
}

/// Whether a configuration file is the user's (relative `Include`s are
/// under `~/.ssh`) or the system's (under `/etc/ssh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    User,
    System,
}

/// The keywords hostscan uses. Everything else is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    HostName,
    User,
    Port,
    IdentityFile,
    CertificateFile,
    IdentitiesOnly,
    ProxyJump,
    ProxyCommand,
    HostKeyAlias,
    UserKnownHostsFile,
    StrictHostKeyChecking,
    ConnectTimeout,
}

impl Keyword {
    fn parse(lowercase: &str) -> Option<Self> {
        Some(match lowercase {
            "hostname" => Self::HostName,
            "user" => Self::User,
            "port" => Self::Port,
            "identityfile" => Self::IdentityFile,
            "certificatefile" => Self::CertificateFile,
            "identitiesonly" => Self::IdentitiesOnly,
            "proxyjump" => Self::ProxyJump,
            "proxycommand" => Self::ProxyCommand,
            "hostkeyalias" => Self::HostKeyAlias,
            "userknownhostsfile" => Self::UserKnownHostsFile,
            "stricthostkeychecking" => Self::StrictHostKeyChecking,
            "connecttimeout" => Self::ConnectTimeout,
            _ => return None,
        })
    }
}

/// One `Match` criterion; `negated` for `!criterion`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Criterion {
    negated: bool,
    test: Test,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    All,
    /// Never true: hostscan does not canonicalize host names.
    Canonical,
    /// hostscan reads the configuration once, so this is that final pass.
    Final,
    /// Patterns against the host name after `HostName`.
    Host(Vec<String>),
    /// Patterns against the name as given.
    OriginalHost(Vec<String>),
    /// Patterns against the remote user.
    User(Vec<String>),
    /// Patterns against the local user.
    LocalUser(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// `Host pattern…`: starts a block.
    Host(Vec<String>),
    /// `Match criterion…`: starts a block.
    Match(Vec<Criterion>),
    /// A keyword hostscan uses, with its checked arguments.
    Set(Keyword, Vec<String>),
    /// `Include`: each matched file, in order, evaluated as OpenSSH does.
    Include(Vec<Vec<Item>>),
}

/// A parsed configuration: the user's file, then the system's, as ssh
/// reads them (`-F FILE` reads that one file alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshConfig {
    files: Vec<Vec<Item>>,
    /// The files read, for messages.
    pub sources: Vec<PathBuf>,
}

/// What the caller already knows (from its command line or the request),
/// which wins over the file, and is what `Match user` and `%r`/`%p` see.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<'a> {
    /// The name as given: a `Host` alias, a DNS name or an address.
    pub host: &'a str,
    pub user: Option<&'a str>,
    pub port: Option<u16>,
}

/// Everything the configuration says about one host. `None`/empty means
/// the file says nothing; the caller's defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// `HostName`, with `%h` expanded: the name to connect to.
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// `IdentityFile`s in order, `~` and tokens expanded.
    pub identity_files: Vec<PathBuf>,
    /// `CertificateFile`s in order, `~` and tokens expanded.
    pub certificate_files: Vec<PathBuf>,
    pub identities_only: Option<bool>,
    /// `ProxyJump` as written (`none` included), checked for syntax. At
    /// most one of `proxy_jump` and `proxy_command` is set: whichever the
    /// file gives first wins, as in OpenSSH.
    pub proxy_jump: Option<String>,
    /// `ProxyCommand` as written (the rest of its line; not `none`), its
    /// tokens checked (`proxy::script` runs it).
    pub proxy_command: Option<String>,
    /// `HostKeyAlias`: the name this host's keys are looked up and pinned
    /// under instead of the host name (the port stays).
    pub host_key_alias: Option<String>,
    /// The first `UserKnownHostsFile`, expanded (ssh writes to the first).
    pub user_known_hosts_file: Option<PathBuf>,
    /// `StrictHostKeyChecking`: `yes` and `ask` → strict, `accept-new` →
    /// tofu, `no`/`off` → insecure-accept-any.
    pub strict_host_key_checking: Option<HostKeyPolicy>,
    pub connect_timeout: Option<Duration>,
}

/// The local side of token expansion.
#[derive(Debug, Clone)]
pub struct Local {
    pub home: PathBuf,
    pub user: String,
}

impl Local {
    /// `$HOME` (or `/`) and the local user name.
    pub fn from_env() -> Self {
        Self {
            home: std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from),
            user: crate::config::local_user(),
        }
    }
}

impl SshConfig {
    /// Reads `path` and what it includes. A missing file is an error (this
    /// is for files named explicitly, `-F FILE` or `--ssh-config FILE`).
    pub fn load(path: &Path, kind: ConfigKind, local: &Local) -> Result<Self, ConfigFileError> {
        let items = read_file(path, kind, local, 0)?;
        Ok(Self {
            files: vec![items],
            sources: vec![path.to_path_buf()],
        })
    }

    /// ssh's defaults: `~/.ssh/config`, then `/etc/ssh/ssh_config`, each
    /// only if it exists.
    pub fn load_default(local: &Local) -> Result<Self, ConfigFileError> {
        let mut config = Self::default();
        for (path, kind) in [
            (local.home.join(".ssh").join("config"), ConfigKind::User),
            (PathBuf::from("/etc/ssh/ssh_config"), ConfigKind::System),
        ] {
            if path.is_file() {
                config.files.push(read_file(&path, kind, local, 0)?);
                config.sources.push(path);
            }
        }
        Ok(config)
    }

    /// Parses text as if read from `name` (for tests and fixtures).
    pub fn parse(
        text: &str,
        name: &Path,
        kind: ConfigKind,
        local: &Local,
    ) -> Result<Self, ConfigFileError> {
        Ok(Self {
            files: vec![parse(text, name, kind, local, 0)?],
            sources: vec![name.to_path_buf()],
        })
    }

    /// Resolves `query.host` as ssh would: each file in order, every block
    /// that matches, the first value of each keyword winning.
    pub fn resolve(&self, query: &Query<'_>, local: &Local) -> HostConfig {
        let mut raw = Raw::default();
        for items in &self.files {
            let mut active = true;
            apply(items, query, local, &mut active, false, &mut raw);
        }
        raw.finish(query, local)
    }
}

/// Values as written, first one kept, before token expansion.
#[derive(Debug, Default)]
struct Raw {
    hostname: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    identity_files: Vec<String>,
    certificate_files: Vec<String>,
    identities_only: Option<bool>,
    proxy_jump: Option<String>,
    proxy_command: Option<String>,
    host_key_alias: Option<String>,
    user_known_hosts_file: Option<String>,
    strict: Option<HostKeyPolicy>,
    connect_timeout: Option<Duration>,
}

impl Raw {
    fn set(&mut self, keyword: Keyword, args: &[String]) {
        let first = || args.first().cloned().unwrap_or_default();
        match keyword {
            Keyword::HostName => {
                self.hostname.get_or_insert_with(first);
            }
            Keyword::User => {
                self.user.get_or_insert_with(first);
            }
            Keyword::Port => {
                if self.port.is_none() {
                    self.port = first().parse().ok();
                }
            }
            Keyword::IdentityFile => self.identity_files.push(first()),
            Keyword::CertificateFile => self.certificate_files.push(first()),
            Keyword::IdentitiesOnly => {
                if self.identities_only.is_none() {
                    self.identities_only = parse_yes_no(&first());
                }
            }
            // ProxyJump and ProxyCommand compete: the first of either wins.
            Keyword::ProxyJump => {
                if self.proxy_command.is_none() {
                    self.proxy_jump.get_or_insert_with(first);
                }
            }
            Keyword::ProxyCommand => {
                if self.proxy_jump.is_none() {
                    self.proxy_command.get_or_insert_with(first);
                }
            }
            Keyword::HostKeyAlias => {
                self.host_key_alias.get_or_insert_with(first);
            }
            Keyword::UserKnownHostsFile => {
                self.user_known_hosts_file.get_or_insert_with(first);
            }
            Keyword::StrictHostKeyChecking => {
                if self.strict.is_none() {
                    self.strict = parse_strict(&first());
                }
            }
            Keyword::ConnectTimeout => {
                if self.connect_timeout.is_none() {
                    self.connect_timeout = first().parse().ok().map(Duration::from_secs);
                }
            }
        }
    }

    /// The host name as `Match host` sees it: after `HostName`, if set.
    fn current_hostname(&self, original: &str) -> String {
        match &self.hostname {
            Some(h) => expand_hostname(h, original),
            None => original.to_string(),
        }
    }

    fn finish(self, query: &Query<'_>, local: &Local) -> HostConfig {
        let hostname = self
            .hostname
            .as_deref()
            .map(|h| expand_hostname(h, query.host));
        let tokens = Tokens {
            local,
            host: hostname.as_deref().unwrap_or(query.host),
            original: query.host,
            user: query
                .user
                .or(self.user.as_deref())
                .unwrap_or(local.user.as_str()),
            port: query.port.or(self.port).unwrap_or(22),
        };
        let paths = |values: &[String]| -> Vec<PathBuf> {
            values
                .iter()
                .filter(|v| !v.eq_ignore_ascii_case("none"))
                .map(|v| tokens.path(v))
                .collect()
        };
        let identity_files = paths(&self.identity_files);
        let certificate_files = paths(&self.certificate_files);
        let user_known_hosts_file = self
            .user_known_hosts_file
            .as_deref()
            .filter(|v| !v.eq_ignore_ascii_case("none"))
            .map(|v| tokens.path(v));
        HostConfig {
            hostname: hostname.clone(),
            user: self.user.clone(),
            port: self.port,
            identity_files,
            certificate_files,
            identities_only: self.identities_only,
            proxy_jump: self.proxy_jump,
            proxy_command: self
                .proxy_command
                .filter(|c| !c.trim().eq_ignore_ascii_case("none")),
            host_key_alias: self.host_key_alias,
            user_known_hosts_file,
            strict_host_key_checking: self.strict,
            connect_timeout: self.connect_timeout,
        }
    }
}

fn apply(
    items: &[Item],
    query: &Query<'_>,
    local: &Local,
    active: &mut bool,
    never: bool,
    raw: &mut Raw,
) {
    for item in items {
        match item {
            Item::Host(patterns) => *active = !never && host_matches(patterns, query.host),
            Item::Match(criteria) => {
                *active = !never && criteria.iter().all(|c| c.holds(query, local, raw));
            }
            Item::Set(keyword, args) => {
                if *active {
                    raw.set(*keyword, args);
                }
            }
            Item::Include(files) => {
                let outer = *active;
                for file in files {
                    // An included file starts active (if the Include is),
                    // and its blocks never change the including file's.
                    let mut inner = outer && !never;
                    apply(file, query, local, &mut inner, never || !outer, raw);
                }
                *active = outer;
            }
        }
    }
}

impl Criterion {
    fn holds(&self, query: &Query<'_>, local: &Local, raw: &Raw) -> bool {
        let value = match &self.test {
            Test::All | Test::Final => true,
            Test::Canonical => false,
            Test::Host(p) => list_matches(p, &raw.current_hostname(query.host)),
            Test::OriginalHost(p) => list_matches(p, query.host),
            Test::User(p) => list_matches(
                p,
                query
                    .user
                    .or(raw.user.as_deref())
                    .unwrap_or(local.user.as_str()),
            ),
            Test::LocalUser(p) => list_matches(p, &local.user),
        };
        value != self.negated
    }
}

/// `Host` semantics: some positive pattern matches and no negated one does.
fn host_matches(patterns: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let mut matched = false;
    for p in patterns {
        let p = p.to_ascii_lowercase();
        match p.strip_prefix('!') {
            Some(negated) if wildcard_match(negated, &host) => return false,
            Some(_) => {}
            None if wildcard_match(&p, &host) => matched = true,
            None => {}
        }
    }
    matched
}

/// A comma-separated `Match` pattern list (already split).
fn list_matches(patterns: &[String], value: &str) -> bool {
    host_matches(patterns, value)
}

fn expand_hostname(value: &str, original: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(original),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Values for `%` tokens in file names.
struct Tokens<'a> {
    local: &'a Local,
    host: &'a str,
    original: &'a str,
    user: &'a str,
    port: u16,
}

impl Tokens<'_> {
    /// `~` and `%d %u %h %n %r %p %%` expanded (unknown tokens were
    /// rejected when the file was read).
    fn path(&self, value: &str) -> PathBuf {
        let value = expand_tilde(value, &self.local.home);
        let mut out = String::new();
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('d') => out.push_str(&self.local.home.to_string_lossy()),
                Some('u') => out.push_str(&self.local.user),
                Some('h') => out.push_str(self.host),
                Some('n') => out.push_str(self.original),
                Some('r') => out.push_str(self.user),
                Some('p') => out.push_str(&self.port.to_string()),
                Some(other) => {
                    out.push('%');
                    if other != '%' {
                        out.push(other);
                    }
                }
                None => out.push('%'),
            }
        }
        PathBuf::from(out)
    }
}

fn expand_tilde(value: &str, home: &Path) -> String {
    match value.strip_prefix('~') {
        Some("") => home.to_string_lossy().into_owned(),
        Some(rest) if rest.starts_with('/') => format!("{}{rest}", home.to_string_lossy()),
        _ => value.to_string(),
    }
}

fn parse_yes_no(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

fn parse_strict(value: &str) -> Option<HostKeyPolicy> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "ask" => Some(HostKeyPolicy::Strict),
        "accept-new" => Some(HostKeyPolicy::Tofu),
        "no" | "false" | "off" => Some(HostKeyPolicy::InsecureAcceptAny),
        _ => None,
    }
}

// ------------------------------------------------------------------ reading

fn read_file(
    path: &Path,
    kind: ConfigKind,
    local: &Local,
    depth: usize,
) -> Result<Vec<Item>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
        file: path.display().to_string(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, path, kind, local, depth)
}

fn parse(
    text: &str,
    path: &Path,
    kind: ConfigKind,
    local: &Local,
    depth: usize,
) -> Result<Vec<Item>, ConfigFileError> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fail = |message: String| ConfigFileError {
            file: path.display().to_string(),
            line: i + 1,
            message,
        };
        let words = split_line(line).map_err(&fail)?;
        let Some((keyword, args)) = words.split_first() else {
            continue;
        };
        let lower = keyword.to_ascii_lowercase();
        match lower.as_str() {
            "host" => {
                if args.is_empty() {
                    return Err(fail("Host needs at least one pattern".into()));
                }
                items.push(Item::Host(args.to_vec()));
            }
            "match" => items.push(Item::Match(parse_match(args).map_err(&fail)?)),
            "include" => {
                if args.is_empty() {
                    return Err(fail("Include needs a file name".into()));
                }
                if depth + 1 > MAX_INCLUDE_DEPTH {
                    return Err(fail(format!(
                        "Include nested more than {MAX_INCLUDE_DEPTH} deep (a loop?)"
                    )));
                }
                let mut files = Vec::new();
                for pattern in args {
                    for file in include_paths(pattern, kind, local).map_err(&fail)? {
                        files.push(read_file(&file, kind, local, depth + 1)?);
                    }
                }
                items.push(Item::Include(files));
            }
            // The rest of the line as written, quotes and all: it is a
            // shell command.
            "proxycommand" => {
                let command = rest_of_line(line);
                if command.is_empty() {
                    return Err(fail("ProxyCommand: missing argument".into()));
                }
                let args = [command.to_string()];
                check_value(Keyword::ProxyCommand, &args)
                    .map_err(|m| fail(format!("ProxyCommand: {m}")))?;
                items.push(Item::Set(Keyword::ProxyCommand, args.to_vec()));
            }
            _ => {
                if let Some(keyword) = Keyword::parse(&lower) {
                    check_value(keyword, args).map_err(|m| fail(format!("{keyword:?}: {m}")))?;
                    items.push(Item::Set(keyword, args.to_vec()));
                }
            }
        }
    }
    Ok(items)
}

/// Files an `Include` pattern names, sorted, as glob(3) returns them. A
/// pattern that matches nothing is not an error (as in ssh).
fn include_paths(pattern: &str, kind: ConfigKind, local: &Local) -> Result<Vec<PathBuf>, String> {
    let expanded = expand_tilde(pattern, &local.home);
    let full = if Path::new(&expanded).is_absolute() {
        PathBuf::from(expanded)
    } else {
        match kind {
            ConfigKind::User => local.home.join(".ssh").join(expanded),
            ConfigKind::System => Path::new("/etc/ssh").join(expanded),
        }
    };
    let text = full.to_string_lossy();
    let paths = glob::glob(&text).map_err(|e| format!("Include {pattern:?}: {e}"))?;
    let mut out: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

fn parse_match(args: &[String]) -> Result<Vec<Criterion>, String> {
    if args.is_empty() {
        return Err("Match needs a criterion (all, host, originalhost, user, localuser)".into());
    }
    let mut out = Vec::new();
    let mut rest = args.iter();
    while let Some(word) = rest.next() {
        let lower = word.to_ascii_lowercase();
        let (negated, name) = match lower.strip_prefix('!') {
            Some(n) => (true, n.to_string()),
            None => (false, lower.clone()),
        };
        let mut patterns = || -> Result<Vec<String>, String> {
            let list = rest
                .next()
                .ok_or_else(|| format!("Match {name} needs a pattern list"))?;
            Ok(list.split(',').map(str::to_string).collect())
        };
        let test = match name.as_str() {
            "all" => Test::All,
            "canonical" => Test::Canonical,
            "final" => Test::Final,
            "host" => Test::Host(patterns()?),
            "originalhost" => Test::OriginalHost(patterns()?),
            "user" => Test::User(patterns()?),
            "localuser" => Test::LocalUser(patterns()?),
            "exec" | "localnetwork" | "tagged" | "command" | "version" | "sessiontype" => {
                return Err(format!(
                    "Match {name} is not supported by hostscan (supported: all, host, originalhost, user, localuser, canonical, final)"
                ));
            }
            other => return Err(format!("unknown Match criterion {other:?}")),
        };
        out.push(Criterion { negated, test });
    }
    Ok(out)
}

/// Checks a used keyword's value when the file is read.
fn check_value(keyword: Keyword, args: &[String]) -> Result<(), String> {
    let Some(value) = args.first() else {
        return Err("missing argument".into());
    };
    match keyword {
        Keyword::HostName => check_tokens(value, "h"),
        Keyword::User => {
            if value.contains('%') {
                Err("tokens in User are not supported".into())
            } else {
                Ok(())
            }
        }
        Keyword::Port => match value.parse::<u16>() {
            Ok(p) if p > 0 => Ok(()),
            _ => Err(format!("bad port {value:?}")),
        },
        Keyword::IdentityFile | Keyword::CertificateFile | Keyword::UserKnownHostsFile => {
            check_tokens(value, "dunhrp")
        }
        Keyword::IdentitiesOnly => parse_yes_no(value)
            .map(|_| ())
            .ok_or_else(|| format!("expected yes or no, got {value:?}")),
        Keyword::ProxyJump => jump::parse_proxy_jump(value).map(|_| ()),
        Keyword::ProxyCommand => super::proxy::script(value).map(|_| ()),
        Keyword::HostKeyAlias => {
            if value.is_empty()
                || value
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '#')
            {
                Err(format!(
                    "expected a name without spaces, commas or '#', got {value:?}"
                ))
            } else {
                Ok(())
            }
        }
        Keyword::StrictHostKeyChecking => parse_strict(value)
            .map(|_| ())
            .ok_or_else(|| format!("expected yes, accept-new, no, off or ask, got {value:?}")),
        Keyword::ConnectTimeout => match value.parse::<u64>() {
            Ok(s) if (1..=3600).contains(&s) => Ok(()),
            _ => Err(format!("expected 1-3600 seconds, got {value:?}")),
        },
    }
}

/// Rejects `%x` tokens other than `allowed` (and `%%`).
fn check_tokens(value: &str, allowed: &str) -> Result<(), String> {
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('%') => {}
                Some(t) if allowed.contains(t) => {}
                Some(t) => return Err(format!("unsupported token %{t} in {value:?}")),
                None => return Err(format!("a lone % at the end of {value:?}")),
            }
        }
    }
    Ok(())
}

/// Splits a line into words as ssh does: the keyword ends at whitespace or
/// `=`; arguments are separated by whitespace; double or single quotes
/// group; a word starting with `#` starts a comment.
/// A line after its keyword and the `=` or spaces that follow it.
fn rest_of_line(line: &str) -> &str {
    let line = line.trim();
    let key_end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let rest = line[key_end..].trim_start();
    rest.strip_prefix('=').unwrap_or(rest).trim()
}

fn split_line(line: &str) -> Result<Vec<String>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Vec::new());
    }
    let key_end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(key_end);
    let mut rest = rest.trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let mut words = vec![keyword.to_string()];
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { break };
        if first == '#' {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            match quote {
                Some(q) if c == q => {
                    quote = None;
                    chars.next();
                }
                Some(_) => {
                    word.push(c);
                    chars.next();
                }
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    chars.next();
                }
                None if c.is_whitespace() => break,
                None => {
                    word.push(c);
                    chars.next();
                }
            }
        }
        if quote.is_some() {
            return Err("unterminated quote".into());
        }
        words.push(word);
    }
    Ok(words)
}

impl fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::User => "user",
            Self::System => "system",
        })
    }
}

/// Every `IdentityFile` and `CertificateFile` the file names without
/// per-host tokens, expanded: what a service can load at start-up.
impl SshConfig {
    pub fn static_key_files(&self, local: &Local) -> Vec<PathBuf> {
        fn walk(
            items: &[Item],
            local: &Local,
            out: &mut Vec<PathBuf>,
            seen: &mut HashSet<PathBuf>,
        ) {
            for item in items {
                match item {
                    Item::Set(Keyword::IdentityFile, args) => {
                        if let Some(v) = args.first()
                            && !v.contains('%')
                            && !v.eq_ignore_ascii_case("none")
                        {
                            let p = PathBuf::from(expand_tilde(v, &local.home));
                            if seen.insert(p.clone()) {
                                out.push(p);
                            }
                        }
                    }
                    Item::Include(files) => {
                        for f in files {
                            walk(f, local, out, seen);
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for f in &self.files {
            walk(f, local, &mut out, &mut seen);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local {
            home: PathBuf::from("/home/op"),
            user: "op".into(),
        }
    }

    fn config(text: &str) -> SshConfig {
        SshConfig::parse(text, Path::new("test_config"), ConfigKind::User, &local())
            .expect("parses")
    }

    fn resolve(text: &str, host: &str) -> HostConfig {
        config(text).resolve(
            &Query {
                host,
                ..Default::default()
            },
            &local(),
        )
    }

    #[test]
    fn proxy_command_is_the_rest_of_its_line_and_competes_with_proxy_jump() {
        let text = "\
Host ssm-*
    ProxyCommand sh -c \"aws ssm start-session --target %h --parameters 'portNumber=%p'\"
    ProxyJump never-used
Host legacy
    ProxyCommand=ssh -W %h:%p bastion
Host jumped
    ProxyJump bastion
    ProxyCommand never-used
Host direct
    ProxyCommand none
Host *
    ProxyCommand ssh -W %h:%p fallback
";
        let c = resolve(text, "ssm-i-0abc");
        assert_eq!(
            c.proxy_command.as_deref(),
            Some("sh -c \"aws ssm start-session --target %h --parameters 'portNumber=%p'\"")
        );
        assert_eq!(c.proxy_jump, None);
        assert_eq!(
            resolve(text, "legacy").proxy_command.as_deref(),
            Some("ssh -W %h:%p bastion")
        );
        let j = resolve(text, "jumped");
        assert_eq!(
            (j.proxy_jump.as_deref(), j.proxy_command),
            (Some("bastion"), None)
        );
        let d = resolve(text, "direct");
        assert_eq!((d.proxy_jump, d.proxy_command), (None, None));
        assert_eq!(
            resolve(text, "other").proxy_command.as_deref(),
            Some("ssh -W %h:%p fallback")
        );
    }

    #[test]
    fn host_key_alias_first_value_wins() {
        let text = "Host web-*\n    HostKeyAlias web-pool\nHost *\n    HostKeyAlias other\n";
        assert_eq!(
            resolve(text, "web-3").host_key_alias.as_deref(),
            Some("web-pool")
        );
        assert_eq!(resolve(text, "db").host_key_alias.as_deref(), Some("other"));
    }

    #[test]
    fn first_value_wins_and_identity_files_accumulate() {
        let text = "\
Host web-*
    User deploy
    IdentityFile ~/.ssh/web_%h
Host *
    User nobody
    Port 2222
    IdentityFile %d/.ssh/id_%r
";
        let c = resolve(text, "web-1");
        assert_eq!(c.user.as_deref(), Some("deploy"));
        assert_eq!(c.port, Some(2222));
        assert_eq!(
            c.identity_files,
            vec![
                PathBuf::from("/home/op/.ssh/web_web-1"),
                PathBuf::from("/home/op/.ssh/id_deploy")
            ]
        );
        let other = resolve(text, "db-1");
        assert_eq!(other.user.as_deref(), Some("nobody"));
    }

    #[test]
    fn host_patterns_negation_and_hostname_token() {
        let text = "\
Host *.internal !secret.internal
    HostName %h.corp.example
    ProxyJump bastion
Host bastion
    HostName 10.0.1.2
    ProxyJump none
";
        let c = resolve(text, "app.internal");
        assert_eq!(c.hostname.as_deref(), Some("app.internal.corp.example"));
        assert_eq!(c.proxy_jump.as_deref(), Some("bastion"));
        assert_eq!(resolve(text, "secret.internal"), HostConfig::default());
        let b = resolve(text, "bastion");
        assert_eq!(b.proxy_jump.as_deref(), Some("none"));
        assert_eq!(b.hostname.as_deref(), Some("10.0.1.2"));
    }

    #[test]
    fn match_host_sees_hostname_and_match_all() {
        let text = "\
Host db
    HostName 10.9.0.7
Match host 10.9.*
    User dba
Match !host 10.9.* user op
    User someone
Match all
    ConnectTimeout 7
";
        let c = resolve(text, "db");
        assert_eq!(c.user.as_deref(), Some("dba"));
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(7)));
        let other = resolve(text, "web");
        assert_eq!(other.user.as_deref(), Some("someone"));
    }

    #[test]
    fn global_lines_equals_quotes_comments_and_unknown_keywords() {
        let text = "\
# global defaults come first
ServerAliveInterval 30
User=\"global user\"   # a trailing comment
StrictHostKeyChecking accept-new
UserKnownHostsFile ~/.ssh/known_hosts_%h ~/.ssh/known_hosts2
Host x
    User ignored
    SomeFutureKeyword whatever
";
        let c = resolve(text, "x");
        assert_eq!(c.user.as_deref(), Some("global user"));
        assert_eq!(c.strict_host_key_checking, Some(HostKeyPolicy::Tofu));
        assert_eq!(
            c.user_known_hosts_file,
            Some(PathBuf::from("/home/op/.ssh/known_hosts_x"))
        );
    }

    #[test]
    fn strict_host_key_checking_values() {
        for (v, p) in [
            ("yes", HostKeyPolicy::Strict),
            ("ask", HostKeyPolicy::Strict),
            ("accept-new", HostKeyPolicy::Tofu),
            ("no", HostKeyPolicy::InsecureAcceptAny),
            ("off", HostKeyPolicy::InsecureAcceptAny),
        ] {
            let c = resolve(&format!("StrictHostKeyChecking {v}\n"), "h");
            assert_eq!(c.strict_host_key_checking, Some(p), "{v}");
        }
    }

    #[test]
    fn bad_values_fail_with_file_and_line() {
        for (text, needle) in [
            ("Host a\n  Port 99999\n", "bad port"),
            ("Host a\n  ProxyJump a@@b\n", "ProxyJump"),
            ("IdentitiesOnly maybe\n", "yes or no"),
            ("Match exec \"true\"\n", "not supported"),
            ("Host a\n  ProxyCommand nc %C\n", "%C is not supported"),
            ("Host a\n  ProxyCommand\n", "ProxyCommand: missing"),
            ("Host a\n  HostKeyAlias a,b\n", "HostKeyAlias"),
            ("Match host\n", "pattern list"),
            ("IdentityFile ~/.ssh/%Z\n", "%Z"),
            ("User \"unterminated\n", "quote"),
            ("Host\n", "pattern"),
        ] {
            let e = SshConfig::parse(text, Path::new("cfg"), ConfigKind::User, &local())
                .expect_err(text);
            assert!(e.message.contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with("cfg line "), "{e}");
        }
    }

    #[test]
    fn includes_are_conditional_and_do_not_leak_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().to_path_buf();
        std::fs::create_dir_all(home.join(".ssh/conf.d")).expect("mkdir");
        std::fs::write(
            home.join(".ssh/conf.d/10-a.conf"),
            "User from-include\nHost never-matches\n",
        )
        .expect("write");
        std::fs::write(home.join(".ssh/conf.d/20-b.conf"), "Port 2200\n").expect("write");
        let main = home.join(".ssh/config");
        std::fs::write(
            &main,
            "Host special\n    Include conf.d/*.conf\n    IdentityFile ~/k\nHost *\n    Port 22\n",
        )
        .expect("write");
        let local = Local {
            home: home.clone(),
            user: "op".into(),
        };
        let config = SshConfig::load(&main, ConfigKind::User, &local).expect("load");
        let c = config.resolve(
            &Query {
                host: "special",
                ..Default::default()
            },
            &local,
        );
        assert_eq!(c.user.as_deref(), Some("from-include"));
        assert_eq!(c.port, Some(2200));
        // The included `Host never-matches` did not switch off the
        // including block: its IdentityFile still applies.
        assert_eq!(c.identity_files, vec![home.join("k")]);
        let other = config.resolve(
            &Query {
                host: "other",
                ..Default::default()
            },
            &local,
        );
        assert_eq!(other.user, None);
        assert_eq!(other.port, Some(22));
        assert_eq!(config.static_key_files(&local), vec![home.join("k")]);
    }

    #[test]
    fn include_loops_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("loop");
        std::fs::write(&file, format!("Include {}\n", file.display())).expect("write");
        let local = Local {
            home: dir.path().to_path_buf(),
            user: "op".into(),
        };
        let e = SshConfig::load(&file, ConfigKind::User, &local).expect_err("loop");
        assert!(e.message.contains("nested"), "{e}");
    }

    #[test]
    fn query_user_and_port_feed_tokens() {
        let c = config("IdentityFile /keys/%r@%h:%p\nMatch user admin\n  Port 2\n").resolve(
            &Query {
                host: "h",
                user: Some("admin"),
                port: Some(2022),
            },
            &local(),
        );
        assert_eq!(c.identity_files, vec![PathBuf::from("/keys/admin@h:2022")]);
        assert_eq!(c.port, Some(2));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "(?s).{0,400}") {
            let _ = SshConfig::parse(&text, Path::new("p"), ConfigKind::User, &local())
                .map(|c| c.resolve(&Query { host: "h", ..Default::default() }, &local()));
        }

        #[test]
        fn keyword_lines_never_panic(
            key in "(Host|Match|HostName|User|Port|IdentityFile|ProxyJump|StrictHostKeyChecking|ConnectTimeout)",
            value in "[ -~]{0,40}",
        ) {
            let text = format!("{key} {value}\n");
            let _ = SshConfig::parse(&text, Path::new("p"), ConfigKind::System, &local())
                .map(|c| c.resolve(&Query { host: "h", ..Default::default() }, &local()));
        }
    }
}
