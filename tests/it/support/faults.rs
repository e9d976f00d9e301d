//! Servers that misbehave in ways a real sshd won't: silent, garbage, and a
//! proxy in front of a real sshd that can cut every connection mid-scan.

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Accepts connections and never says anything.
pub struct Silent {
    pub port: u16,
    _task: tokio::task::JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Self { port, _task: task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// Answers every connection with `reply` and closes it.
pub struct Garbage {
    pub port: u16,
    _task: tokio::task::JoinHandle<()>,
}

impl Garbage {
    pub async fn start(reply: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                socket.write_all(reply).await.ok();
                socket.shutdown().await.ok();
            }
        });
        Self { port, _task: task }
    }
}

impl Drop for Garbage {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// A TCP proxy to `127.0.0.1:upstream`; `cut` drops every connection.
pub struct Proxy {
    pub port: u16,
    cut: CancellationToken,
    _task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = CancellationToken::new();
        let token = cut.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = token.cancelled() => {
                        conns.abort_all();
                        return;
                    }
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { return };
                        conns.spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                                tokio::io::copy_bidirectional(&mut client, &mut server).await.ok();
                            }
                        });
                    }
                }
            }
        });
        Self {
            port,
            cut,
            _task: task,
        }
    }

    pub fn cut(&self) {
        self.cut.cancel();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self._task.abort();
    }
}
