//! hostscan's integration tests, compiled as one binary: real PostgreSQL,
//! real OpenSSH sshd, the real `hostscan serve` process.

mod support;

mod cli;
mod diff;
mod e2e;
mod engine;
mod faults;
mod reach;
mod store;
mod userlands;
