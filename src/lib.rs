//! hostscan: agentless host scanning over SSH, served over gRPC.
//!
//! Layers (arrows point one way): `api` → `worker`/`store`/`events`;
//! `worker` → `scan` → `ssh`; `model` is the shared vocabulary; `serve`
//! wires everything; `cli` is the terminal front end; `diff` compares two
//! scans' results (pure). See ARCHITECTURE.md.

pub mod api;
pub mod cli;
pub mod config;
pub mod diff;
pub mod events;
pub mod metrics;
pub mod model;
pub mod net;
pub mod pb;
pub mod scan;
pub mod serve;
pub mod ssh;
pub mod store;
pub mod worker;
