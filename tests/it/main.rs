//! hostscan's integration tests, compiled as one binary: real PostgreSQL,
//! real OpenSSH sshd, the real `hostscan serve` process.

mod support;

mod cli;
mod diff;
mod e2e;
mod engine;
mod faults;
mod limits;
mod metrics;
mod reach;
mod startup;
mod store;
mod tls;
mod userlands;
mod validation;
mod watch_all;
