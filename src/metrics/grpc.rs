//! Per-call gRPC metrics as a tower layer on the server: calls by service,
//! method and code, and their duration.
//!
//! The code is the `grpc-status` the server sent. A handler error is a
//! "trailers-only" response, so its status is in the response headers and is
//! recorded at once. Otherwise the status comes in the trailers at the end of
//! the body, which is wrapped to read them; a body dropped before its end
//! (the client cancelled or went away) counts as `CANCELLED`. Durations run
//! until the status is known, so a WatchScan stream is measured over its
//! whole life.
//!
//! Method names come from the descriptor sets the server registers; any
//! other path is labelled `unknown`, so a client cannot grow the label set.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::{GRPC_DURATION, GRPC_REQUESTS};

/// The gRPC status code names, by number (grpc/doc/statuscodes.md).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `(service, method)` labels of a known path.
type Labels = (&'static str, &'static str);

const UNKNOWN: Labels = ("unknown", "unknown");

/// Adds [`GrpcMetrics`] around the server's routes.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    /// `/package.Service/Method` → labels. Built once at start-up.
    methods: Arc<HashMap<String, Labels>>,
}

impl GrpcMetricsLayer {
    /// Knows every method of every service in `descriptor_sets` (encoded
    /// `FileDescriptorSet`s, as the reflection service gets them).
    /// Undecodable sets are skipped: their calls are labelled `unknown`.
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        let mut methods = HashMap::new();
        for set in descriptor_sets {
            let Ok(pool) = prost_reflect::DescriptorPool::decode(*set) else {
                continue;
            };
            for service in pool.services() {
                for method in service.methods() {
                    let path = format!("/{}/{}", service.full_name(), method.name());
                    // Leaked once per method at start-up: label values
                    // then cost nothing per call.
                    let labels: Labels = (
                        Box::leak(service.full_name().to_string().into_boxed_str()),
                        Box::leak(method.name().to_string().into_boxed_str()),
                    );
                    methods.insert(path, labels);
                }
            }
        }
        Self {
            methods: Arc::new(methods),
        }
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    methods: Arc<HashMap<String, Labels>>,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>, Error = Infallible>,
    S::Future: Send + 'static,
    RB: Body + Unpin,
{
    type Response = http::Response<MeteredBody<RB>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let labels = self
            .methods
            .get(request.uri().path())
            .copied()
            .unwrap_or(UNKNOWN);
        let call = Call {
            labels,
            started: Instant::now(),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = response.await;
            let pending = match status(response.headers()) {
                // Trailers-only: the status is already here.
                Some(code) => {
                    call.finish(code);
                    None
                }
                None => Some(call),
            };
            Ok(response.map(|inner| MeteredBody { inner, pending }))
        })
    }
}

/// A call whose status is not known yet.
#[derive(Debug)]
struct Call {
    labels: Labels,
    started: Instant,
}

impl Call {
    fn finish(self, code: &'static str) {
        let (service, method) = self.labels;
        metrics::counter!(GRPC_REQUESTS, "service" => service, "method" => method, "code" => code)
            .increment(1);
        metrics::histogram!(GRPC_DURATION, "service" => service, "method" => method)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// The code name in `grpc-status`, if the map has one.
fn status(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    let code = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .and_then(|n| CODES.get(n).copied())
        .unwrap_or("UNKNOWN");
    Some(code)
}

/// A response body that records its call when the trailers (or the end, or
/// a drop) arrive.
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: B,
    /// `Some` until the call is recorded.
    pending: Option<Call>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(frame) = &polled {
            let code = match frame {
                Some(Ok(frame)) => frame.trailers_ref().map(|t| status(t).unwrap_or("UNKNOWN")),
                Some(Err(_)) => Some("INTERNAL"),
                None => Some("UNKNOWN"),
            };
            if let Some(code) = code
                && let Some(call) = self.pending.take()
            {
                call.finish(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.pending.take() {
            call.finish("CANCELLED");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_and_bounded() {
        let mut h = HeaderMap::new();
        assert_eq!(status(&h), None);
        h.insert("grpc-status", "5".parse().expect("header"));
        assert_eq!(status(&h), Some("NOT_FOUND"));
        h.insert("grpc-status", "99".parse().expect("header"));
        assert_eq!(status(&h), Some("UNKNOWN"));
    }

    #[test]
    fn knows_the_methods_of_its_descriptor_sets() {
        let layer = GrpcMetricsLayer::new(&[
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]);
        assert_eq!(
            layer.methods.get("/hostscan.v1.ScanService/WatchScan"),
            Some(&("hostscan.v1.ScanService", "WatchScan"))
        );
        assert_eq!(
            layer.methods.get("/grpc.health.v1.Health/Check"),
            Some(&("grpc.health.v1.Health", "Check"))
        );
        assert!(!layer.methods.contains_key("/x.Y/Z"));
    }
}
