//! The gRPC edge: `hostscan.v1.ScanService`.
//!
//! Validates requests (INVALID_ARGUMENT naming the field), checks API keys,
//! calls the store, wakes workers, publishes cancel events, and streams
//! WatchScan. This is the only module that knows `tonic::Status`; `status`
//! below is the one place errors become one.

pub mod codec;
mod deferred;
mod validate;
mod watch;
mod watch_all;

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::events::Hub;
use crate::model::{ScanEvent, ScanStatus};
use crate::pb::{self, scan_service_server::ScanService};
use crate::store::{HostQuery, ListQuery, NewScan, Store, StoreError};
use crate::worker::Workers;

pub use deferred::Deferred;
pub use validate::Invalid;

/// Largest request message a gRPC service of this server decodes (bytes);
/// larger ones get OUT_OF_RANGE (tonic's code for it) before any handler
/// runs. hostscan's requests are a few hundred bytes at most.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The ScanService as the server mounts it: API keys checked first,
/// requests bounded by `MAX_REQUEST_BYTES`.
pub type ScanServiceServer = tonic::service::interceptor::InterceptedService<
    pb::scan_service_server::ScanServiceServer<ScanApi>,
    ApiKeys,
>;

/// Checks a hostname as StartScan and ListScans do; the name as stored.
pub fn validate_hostname(name: &str) -> Result<String, Invalid> {
    validate::hostname(name)
}

/// Checks a `proxy_jump` as StartScan does; the value as stored.
pub fn validate_proxy_jump(value: &str) -> Result<String, Invalid> {
    validate::proxy_jump(value)
}

/// Checks a user name as StartScan would (for configuration defaults).
pub fn validate_username(name: &str) -> Result<String, Invalid> {
    validate::username(name, "")
}

/// Turns a store failure into a status: UNAVAILABLE while the database is
/// down, INTERNAL (detail logged, not sent) otherwise.
fn status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(detail) | StoreError::LoginRefused(detail) => {
            tracing::warn!(%detail, "database unavailable");
            Status::unavailable("the database is unavailable; retry later")
        }
        StoreError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            Status::internal("internal error")
        }
    }
}

impl From<Invalid> for Status {
    fn from(e: Invalid) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

fn not_found(id: i64) -> Status {
    Status::not_found(format!("scan {id} not found"))
}

/// FAILED_PRECONDITION unless `scan` (named by request field `field`) is
/// COMPLETED: only completed scans are compared.
fn completed(scan: &crate::model::Scan, field: &str) -> Result<(), Status> {
    if scan.status == ScanStatus::Completed {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "{field}: scan {} is {}; only COMPLETED scans can be compared",
        scan.id,
        scan.status.as_str().to_ascii_uppercase()
    )))
}

/// `host:port`, IPv6 literals in brackets.
fn host_port(scan: &crate::model::Scan) -> String {
    if scan.hostname.contains(':') {
        format!("[{}]:{}", scan.hostname, scan.port)
    } else {
        format!("{}:{}", scan.hostname, scan.port)
    }
}

/// Defaults applied to StartScan requests.
#[derive(Clone)]
pub struct Defaults {
    pub port: u16,
    pub username: String,
    /// Per-host user and port (from the server's ssh_config), which win
    /// over `port` and `username` for the hosts they name.
    pub per_host: Option<Arc<PerHost>>,
}

/// A host's configured user and port, if any.
pub type PerHost = dyn Fn(&str) -> (Option<String>, Option<u16>) + Send + Sync;

impl std::fmt::Debug for Defaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Defaults")
            .field("port", &self.port)
            .field("username", &self.username)
            .field("per_host", &self.per_host.is_some())
            .finish()
    }
}

impl Defaults {
    /// The defaults for `host`.
    fn for_host(&self, host: &str) -> Defaults {
        let (user, port) = self.per_host.as_ref().map_or((None, None), |f| f(host));
        Defaults {
            port: port.unwrap_or(self.port),
            username: user.unwrap_or_else(|| self.username.clone()),
            per_host: None,
        }
    }
}

/// The ScanService implementation.
#[derive(Clone)]
pub struct ScanApi {
    store: Store,
    hub: Arc<Hub>,
    workers: Workers,
    defaults: Defaults,
    /// Idle interval after which a watch stream sends a heartbeat.
    watch_heartbeat: Duration,
    /// Cancelled at shutdown: open watch streams end.
    shutdown: CancellationToken,
}

impl ScanApi {
    pub fn new(
        store: Store,
        hub: Arc<Hub>,
        workers: Workers,
        defaults: Defaults,
        watch_heartbeat: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            hub,
            workers,
            defaults,
            watch_heartbeat,
            shutdown,
        }
    }

    /// The service to mount, guarded by `keys`.
    pub fn into_service(self, keys: ApiKeys) -> ScanServiceServer {
        tonic::service::interceptor::InterceptedService::new(
            pb::scan_service_server::ScanServiceServer::new(self)
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            keys,
        )
    }
}

#[tonic::async_trait]
impl ScanService for ScanApi {
    async fn start_scan(
        &self,
        request: Request<pb::StartScanRequest>,
    ) -> Result<Response<pb::Scan>, Status> {
        let r = request.into_inner();
        let hostname = validate::hostname(&r.hostname)?;
        let defaults = self.defaults.for_host(&hostname);
        let new = NewScan {
            port: validate::port(r.port, defaults.port)?,
            username: validate::username(&r.username, &defaults.username)?,
            proxy_jump: validate::proxy_jump(&r.proxy_jump)?,
            hostname,
            scan_type: pb::ScanType::try_from(r.scan_type)
                .ok()
                .and_then(pb::ScanType::to_model)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "scan_type: must be SCAN_TYPE_QUICK or SCAN_TYPE_FULL, got {}",
                        r.scan_type
                    ))
                })?,
            request_id: validate::request_id(&r.request_id)?,
        };
        let (scan, created) = self.store.create(new).await.map_err(status)?;
        if created {
            crate::metrics::scan_created(scan.scan_type);
            tracing::info!(scan_id = scan.id, target = %format!("{}@{}:{}", scan.username, scan.hostname, scan.port), scan_type = %scan.scan_type, "scan queued");
            // WatchScans subscribers see new scans from their first state:
            // published before a worker is woken, whose claim (sequence 2)
            // would otherwise race it.
            let mut created = ScanEvent::snapshot(&scan);
            created.scan = None;
            self.hub.publish(created);
            self.workers.wake();
        }
        Ok(Response::new(pb::Scan::from(&scan)))
    }

    async fn get_scan(
        &self,
        request: Request<pb::GetScanRequest>,
    ) -> Result<Response<pb::Scan>, Status> {
        let id = validate::scan_id(request.into_inner().scan_id)?;
        let scan = self.store.get(id).await.map_err(status)?;
        scan.map(|s| Response::new(pb::Scan::from(&s)))
            .ok_or_else(|| not_found(id))
    }

    async fn list_scans(
        &self,
        request: Request<pb::ListScansRequest>,
    ) -> Result<Response<pb::ListScansResponse>, Status> {
        let r = request.into_inner();
        let status_filter = validate::status_filter(r.status)?;
        let type_filter = validate::type_filter(r.scan_type)?;
        let query = ListQuery {
            hostname: validate::hostname_filter(&r.hostname)?,
            status: status_filter,
            scan_type: type_filter,
            limit: validate::page_size(r.page_size)?,
            before_id: validate::page_token(&r.page_token)?,
            finished_since: None,
        };
        let page = self.store.list(query).await.map_err(status)?;
        Ok(Response::new(pb::ListScansResponse {
            scans: page.scans.iter().map(pb::Scan::from).collect(),
            next_page_token: page
                .next_before_id
                .map(validate::encode_page_token)
                .unwrap_or_default(),
            total_size: page.total,
        }))
    }

    async fn list_hosts(
        &self,
        request: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        let r = request.into_inner();
        let order = validate::host_order(&r.order_by)?;
        let query = HostQuery {
            hostname_prefix: validate::hostname_prefix(&r.hostname_prefix)?,
            os_id: validate::os_id(&r.os_id)?,
            limit: validate::page_size(r.page_size)?,
            order,
            after: validate::host_page_token(&r.page_token, order)?,
        };
        let page = self.store.list_hosts(query).await.map_err(status)?;
        Ok(Response::new(pb::ListHostsResponse {
            hosts: page.hosts.iter().map(pb::Host::from).collect(),
            next_page_token: page
                .next
                .as_ref()
                .map(validate::encode_host_page_token)
                .unwrap_or_default(),
            total_size: page.total,
        }))
    }

    type WatchScansStream = watch::WatchStream;

    async fn watch_scans(
        &self,
        request: Request<pb::WatchScansRequest>,
    ) -> Result<Response<Self::WatchScansStream>, Status> {
        let r = request.into_inner();
        let filter = watch_all::Filter {
            hostname: match r.hostname.as_str() {
                "" => None,
                h => Some(validate::hostname(h)?),
            },
            status: validate::status_filter(r.status)?,
            scan_type: validate::type_filter(r.scan_type)?,
        };
        let resume = watch_all::parse_token(&r.resume_token)?;
        watch_all::start(self, filter, resume)
            .await
            .map(Response::new)
    }

    async fn diff_scans(
        &self,
        request: Request<pb::DiffScansRequest>,
    ) -> Result<Response<pb::ScanDiff>, Status> {
        let r = request.into_inner();
        let scan_id = validate::scan_id(r.scan_id)?;
        let base_id = validate::base_scan_id(r.base_scan_id)?;
        let threshold = validate::used_percent_threshold(r.used_percent_threshold)?;
        let scan = self
            .store
            .get(scan_id)
            .await
            .map_err(status)?
            .ok_or_else(|| not_found(scan_id))?;
        let named_base = match base_id {
            Some(id) => Some(
                self.store
                    .get(id)
                    .await
                    .map_err(status)?
                    .ok_or_else(|| not_found(id))?,
            ),
            None => None,
        };
        completed(&scan, "scan_id")?;
        let base = match named_base {
            Some(base) => {
                completed(&base, "base_scan_id")?;
                if !r.allow_different_hosts
                    && (base.hostname != scan.hostname || base.port != scan.port)
                {
                    return Err(Status::failed_precondition(format!(
                        "scan {} is of {} and scan {} of {}: set allow_different_hosts to \
                         compare different hosts",
                        base.id,
                        host_port(&base),
                        scan.id,
                        host_port(&scan)
                    )));
                }
                base
            }
            None => {
                let types = crate::diff::base_types(scan.scan_type);
                self.store
                    .previous_completed(&scan.hostname, scan.port, scan.id, types)
                    .await
                    .map_err(status)?
                    .ok_or_else(|| {
                        Status::failed_precondition(format!(
                            "scan {} has no earlier completed {} scan of {} to compare with",
                            scan.id,
                            types
                                .iter()
                                .map(|t| t.as_str())
                                .collect::<Vec<_>>()
                                .join(" or "),
                            host_port(&scan)
                        ))
                    })?
            }
        };
        let options = crate::diff::DiffOptions {
            used_percent_threshold: threshold,
            base_type: Some(base.scan_type),
            new_type: Some(scan.scan_type),
            base_completed_at: base.completed_at,
            new_completed_at: scan.completed_at,
        };
        let (old, new) = (
            base.results.clone().unwrap_or_default(),
            scan.results.clone().unwrap_or_default(),
        );
        // Thousands of packages a side: off the async threads.
        let d = tokio::task::spawn_blocking(move || crate::diff::diff(&old, &new, &options))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "diff task failed");
                Status::internal("internal error")
            })?;
        Ok(Response::new(pb::ScanDiff::new(
            &d,
            pb::DiffedScan::from(&base),
            pb::DiffedScan::from(&scan),
        )))
    }

    type WatchScanStream = watch::WatchStream;

    async fn watch_scan(
        &self,
        request: Request<pb::WatchScanRequest>,
    ) -> Result<Response<Self::WatchScanStream>, Status> {
        let r = request.into_inner();
        let id = validate::scan_id(r.scan_id)?;
        if r.after_sequence < 0 {
            return Err(Status::invalid_argument(format!(
                "after_sequence: must not be negative, got {}",
                r.after_sequence
            )));
        }
        watch::start(self, id, r.after_sequence)
            .await
            .map(Response::new)
    }

    async fn cancel_scan(
        &self,
        request: Request<pb::CancelScanRequest>,
    ) -> Result<Response<pb::Scan>, Status> {
        let id = validate::scan_id(request.into_inner().scan_id)?;
        let (scan, changed) = self
            .store
            .request_cancel(id)
            .await
            .map_err(status)?
            .ok_or_else(|| not_found(id))?;
        if changed {
            tracing::info!(scan_id = id, "cancelled a pending scan");
            self.hub.publish(ScanEvent::snapshot(&scan));
        } else if scan.status == ScanStatus::Running && self.workers.cancel_local(id) {
            tracing::info!(scan_id = id, "cancelling a running scan");
        }
        Ok(Response::new(pb::Scan::from(&scan)))
    }
}

/// API keys accepted in `authorization: Bearer <key>`. Debug never shows them.
#[derive(Clone, Default)]
pub struct ApiKeys(Arc<[Vec<u8>]>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys(<{} redacted>)", self.0.len())
    }
}

impl ApiKeys {
    pub fn new(keys: &[String]) -> Self {
        Self(keys.iter().map(|k| k.as_bytes().to_vec()).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time over every configured key, whichever matches.
    fn accepts(&self, presented: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0);
        for key in self.0.iter() {
            ok |= key.as_slice().ct_eq(presented);
        }
        ok.into()
    }

    /// The tonic interceptor: UNAUTHENTICATED unless a configured key is
    /// presented (everything passes when none is configured).
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.is_empty() {
            return Ok(request);
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        match presented {
            Some(key) if self.accepts(key.trim().as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("invalid API key")),
            None => Err(Status::unauthenticated(
                "missing API key: send `authorization: Bearer <key>`",
            )),
        }
    }
}

impl tonic::service::Interceptor for ApiKeys {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys() {
        let keys = ApiKeys::new(&["alpha".into(), "beta-key".into()]);
        let with = |v: &str| {
            let mut r = Request::new(());
            r.metadata_mut()
                .insert("authorization", v.parse().expect("ascii"));
            r
        };
        assert!(keys.check(with("Bearer beta-key")).is_ok());
        assert!(keys.check(with("Bearer alpha")).is_ok());
        assert_eq!(
            keys.check(with("Bearer alph"))
                .map(|_| ())
                .map_err(|s| s.code()),
            Err(tonic::Code::Unauthenticated)
        );
        assert!(keys.check(Request::new(())).is_err());
        assert!(ApiKeys::default().check(Request::new(())).is_ok());
        assert_eq!(format!("{keys:?}"), "ApiKeys(<2 redacted>)");
    }
}
