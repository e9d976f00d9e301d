//! Jump hosts (OpenSSH's `ProxyJump`): the syntax, and connecting a chain.
//!
//! A chain is a list of logins, nearest first, ending with the target.
//! The first is reached over TCP; each next one over a `direct-tcpip`
//! channel of the one before, with SSH run over that channel. Every hop is
//! authenticated and its host key verified like the target. Errors name the
//! hop that failed. The caller bounds the whole chain with one timeout and
//! owns every hop's connection (`Session` keeps them and closes them after
//! the target's).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use russh::client;
use tokio::sync::mpsc;

use super::proxy::Proxy;
use super::{
    ConnectOptions, Handler, Progress, SshError, Target, addr_name, auth, client_config, handshake,
};

/// Most jump hosts in one chain.
pub const MAX_HOPS: usize = 8;

/// One `[user@]host[:port]` of a ProxyJump list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    pub user: Option<String>,
    /// Without brackets for IPv6.
    pub host: String,
    pub port: Option<u16>,
}

impl std::fmt::Display for JumpHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        match (self.host.contains(':'), self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
            (true, None) => write!(f, "[{}]", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (false, None) => write!(f, "{}", self.host),
        }
    }
}

/// Parses a ProxyJump value: `none` (`Ok(None)`: connect directly) or
/// `[user@]host[:port][,…]` with IPv6 addresses in brackets (`[::1]:22`)
/// and `ssh://[user@]host[:port]` URIs, at most `MAX_HOPS`. Errors say what
/// is wrong with which hop; they never panic on any input.
pub fn parse_proxy_jump(spec: &str) -> Result<Option<Vec<JumpHost>>, String> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if spec.is_empty() {
        return Err("is empty (use \"none\" for a direct connection)".into());
    }
    let hops: Vec<&str> = spec.split(',').collect();
    if hops.len() > MAX_HOPS {
        return Err(format!("has {} hops; the limit is {MAX_HOPS}", hops.len()));
    }
    hops.iter()
        .enumerate()
        .map(|(i, hop)| parse_hop(hop.trim()).map_err(|e| format!("hop {} ({hop:?}): {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn parse_hop(hop: &str) -> Result<JumpHost, String> {
    let hop = hop.strip_prefix("ssh://").unwrap_or(hop);
    if hop.is_empty() {
        return Err("is empty".into());
    }
    if hop
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err("contains a space, a control character or '/'".into());
    }
    let (user, rest) = match hop.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() && !u.contains('@') => (Some(u.to_string()), r),
        Some(_) => return Err("has an empty or doubled user part".into()),
        None => (None, hop),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (addr, after) = inner.split_once(']').ok_or("has '[' without ']'")?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("has text after ']' that is not :port")?,
            ),
        };
        (addr.to_string(), port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h.to_string(), Some(p)),
            Some(_) => return Err("IPv6 addresses need brackets: [address]:port".into()),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("has a bad port {p:?} (1-65535)")),
        },
    };
    Ok(JumpHost { user, host, port })
}

/// A jump host to log in to on the way: who, what to offer, how to check
/// its key.
#[derive(Debug, Clone)]
pub struct Hop {
    pub target: Target,
    pub identities: Arc<auth::Identities>,
    pub verifier: super::HostKeyVerifier,
}

/// What one link of the chain is, for messages.
fn addr_of(t: &Target) -> String {
    addr_name(&t.host, t.port)
}

/// Adds where in the chain an error happened: "via bastion A" for the
/// target, "bastion 2 of 2, via bastion A, on the way to T" for a hop.
pub(super) fn in_chain(e: SshError, index: usize, target: &Target, hops: &[Hop]) -> SshError {
    if hops.is_empty() {
        return e;
    }
    let via = |n: usize| -> Option<String> {
        let names: Vec<String> = hops[..n].iter().map(|h| addr_of(&h.target)).collect();
        match names.len() {
            0 => None,
            1 => Some(format!("via bastion {}", names[0])),
            _ => Some(format!("via bastions {}", names.join(", "))),
        }
    };
    let context = if index >= hops.len() {
        via(hops.len()).unwrap_or_default()
    } else {
        let mut parts = vec![format!(
            "bastion {} of {} on the way to {target}",
            index + 1,
            hops.len()
        )];
        parts.extend(via(index));
        parts.join(", ")
    };
    SshError::Route {
        context,
        source: Box::new(e),
    }
}

/// A connected chain: the target's handle, the hops' handles (nearest
/// first) and the ProxyCommand under the first link, if any.
pub(super) type Chain = (
    client::Handle<Handler>,
    Vec<client::Handle<Handler>>,
    Option<Proxy>,
);

/// Connects and logs in to every hop and then the target. `progress` says
/// where the chain is, for a timeout message.
pub(super) async fn connect_chain(
    target: &Target,
    opts: &ConnectOptions,
    progress: &Progress,
) -> Result<Chain, SshError> {
    let links: Vec<(&Target, &auth::Identities, &super::HostKeyVerifier)> = opts
        .jump
        .iter()
        .map(|h| (&h.target, &*h.identities, &h.verifier))
        .chain(std::iter::once((target, &*opts.identities, &opts.verifier)))
        .collect();
    let mut handles: Vec<client::Handle<Handler>> = Vec::with_capacity(links.len());
    // Where each hop's handler reports refused channel opens (the server's
    // reason text): the next link's failure to get through.
    let mut refusals: Option<mpsc::UnboundedReceiver<String>> = None;
    let mut proxy: Option<Proxy> = None;
    for (index, (link, identities, verifier)) in links.into_iter().enumerate() {
        progress.hop.store(index, Ordering::Relaxed);
        progress.phase.store(1, Ordering::Relaxed);
        let addr = addr_of(link);
        let (refused_tx, refused_rx) = mpsc::unbounded_channel();
        let handler = Handler {
            host: link.host.clone(),
            port: link.port,
            verifier: verifier.clone(),
            refused: refused_tx,
        };
        let config = client_config(verifier, &link.host, link.port).await;
        let attempt = async {
            let mut handle = match handles.last() {
                None if opts.proxy_command.is_some() => {
                    let command = opts
                        .proxy_command
                        .as_ref()
                        .ok_or_else(|| SshError::Channel("the ProxyCommand went missing".into()))?;
                    progress.phase.store(1, Ordering::Relaxed);
                    let (started, stream) = Proxy::spawn(command, &addr)?;
                    let running = proxy.insert(started);
                    progress.phase.store(2, Ordering::Relaxed);
                    match handshake(config, stream, handler, &addr).await {
                        Ok(handle) => handle,
                        // A command that ended says why better than the
                        // handshake that lost its transport.
                        Err(e) => return Err(running.failure(&addr).await.unwrap_or(e)),
                    }
                }
                None => {
                    let stream = super::tcp(link, &addr, progress).await?;
                    progress.phase.store(2, Ordering::Relaxed);
                    if opts.jump.is_empty() {
                        handshake(config, stream, handler, &addr).await?
                    } else {
                        handshake(config, QuickAck(stream), handler, &addr).await?
                    }
                }
                Some(previous) => {
                    let channel = previous
                        .channel_open_direct_tcpip(
                            link.host.clone(),
                            u32::from(link.port),
                            "127.0.0.1",
                            0,
                        )
                        .await;
                    let channel = match channel {
                        Ok(c) => c,
                        Err(e) => {
                            let reason = match refusals.as_mut() {
                                Some(rx) => rx.recv().await,
                                None => None,
                            };
                            return Err(forward_error(e, reason, &addr));
                        }
                    };
                    progress.phase.store(2, Ordering::Relaxed);
                    handshake(config, channel.into_stream(), handler, &addr).await?
                }
            };
            progress.phase.store(3, Ordering::Relaxed);
            auth::authenticate(&mut handle, link, identities, opts.agent.as_ref()).await?;
            Ok(handle)
        };
        match attempt.await {
            Ok(handle) => {
                handles.push(handle);
                refusals = Some(refused_rx);
            }
            Err(e) => return Err(in_chain(e, index, target, &opts.jump)),
        }
    }
    progress.phase.store(4, Ordering::Relaxed);
    let handle = handles
        .pop()
        .ok_or_else(|| SshError::Channel("empty chain".into()))?;
    Ok((handle, handles, proxy))
}

/// The first jump host's TCP connection, acknowledging every read at once.
///
/// It carries the whole chain's handshakes and the scan. sshd does not set
/// TCP_NODELAY on a connection without a session, so it holds a small
/// segment until the previous one is acknowledged; with Linux's delayed
/// ACKs that is a 40 ms stall each time the inner server sends two packets
/// in a row (measured: two to four per scan). TCP_QUICKACK is not sticky,
/// so it is set again after each read; it costs one setsockopt per read.
struct QuickAck(tokio::net::TcpStream);

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            socket2::SockRef::from(&self.0).set_tcp_quickack(true).ok();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Why a jump host could not open a connection onward, from russh's error
/// and the server's reason text (OpenSSH sends strerror or gai_strerror).
fn forward_error(e: russh::Error, reason: Option<String>, addr: &str) -> SshError {
    let reason = reason.unwrap_or_default();
    let lower = reason.to_ascii_lowercase();
    let addr = addr.to_string();
    match e {
        russh::Error::ChannelOpenFailure(kind) => {
            if lower.contains("refused") {
                SshError::Refused { addr }
            } else if lower.contains("name or service")
                || lower.contains("name resolution")
                || lower.contains("nodename")
                || lower.contains("no address associated")
            {
                SshError::Dns {
                    host: addr,
                    detail: format!("the jump host could not resolve it: {reason}"),
                }
            } else if matches!(kind, russh::ChannelOpenFailure::AdministrativelyProhibited) {
                SshError::Unreachable {
                    addr,
                    detail: format!(
                        "the jump host refused to forward (administratively prohibited: AllowTcpForwarding?){}",
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {reason}")
                        }
                    ),
                }
            } else {
                SshError::Unreachable {
                    addr,
                    detail: if reason.is_empty() {
                        format!("the jump host could not connect ({kind:?})")
                    } else {
                        format!("the jump host could not connect: {reason}")
                    },
                }
            }
        }
        other => super::classify(other, &addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(user: Option<&str>, host: &str, port: Option<u16>) -> JumpHost {
        JumpHost {
            user: user.map(str::to_string),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn proxy_jump_syntax() {
        assert_eq!(parse_proxy_jump("none"), Ok(None));
        assert_eq!(
            parse_proxy_jump("bastion"),
            Ok(Some(vec![hop(None, "bastion", None)]))
        );
        assert_eq!(
            parse_proxy_jump("ops@10.0.1.2:2222,[fe80::1]:22, ssh://me@inner"),
            Ok(Some(vec![
                hop(Some("ops"), "10.0.1.2", Some(2222)),
                hop(None, "fe80::1", Some(22)),
                hop(Some("me"), "inner", None),
            ]))
        );
        assert_eq!(
            parse_proxy_jump("[::1]").map(|h| h.map(|v| v[0].to_string())),
            Ok(Some("[::1]".into()))
        );
        for bad in [
            "",
            "a,,b",
            "fe80::1",
            "host:0",
            "host:99999",
            "host:x",
            "@host",
            "a@@b",
            "[::1",
            "[::1]x",
            "a b",
            "a/b",
            "a,b,c,d,e,f,g,h,i",
        ] {
            assert!(parse_proxy_jump(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_proxy_jump("ok,bad:port")
                .expect_err("bad")
                .starts_with("hop 2")
        );
    }

    proptest::proptest! {
        #[test]
        fn proxy_jump_parser_never_panics(spec in "(?s).{0,80}") {
            let _ = parse_proxy_jump(&spec);
        }

        #[test]
        fn parsed_hops_print_back(
            user in proptest::option::of("[a-z]{1,8}"),
            host in "[a-z0-9.-]{1,20}",
            port in proptest::option::of(1u16..),
        ) {
            let h = JumpHost { user, host, port };
            let back = parse_proxy_jump(&h.to_string());
            proptest::prop_assert_eq!(back, Ok(Some(vec![h])));
        }
    }
}
