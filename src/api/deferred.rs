//! A gRPC service that exists before it is ready: the server listens (and
//! health answers NOT_SERVING) while the database is still coming up, and
//! calls to the deferred service get UNAVAILABLE until `set` hands it the
//! real one.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

/// `S` once it is set; UNAVAILABLE before. Clones share the slot.
#[derive(Debug)]
pub struct Deferred<S> {
    ready: Arc<OnceLock<S>>,
}

impl<S> Clone for Deferred<S> {
    fn clone(&self) -> Self {
        Self {
            ready: self.ready.clone(),
        }
    }
}

impl<S> Default for Deferred<S> {
    fn default() -> Self {
        Self {
            ready: Arc::new(OnceLock::new()),
        }
    }
}

impl<S> Deferred<S> {
    /// From now on calls go to `service`. A second call changes nothing.
    pub fn set(&self, service: S) {
        self.ready.set(service).ok();
    }
}

impl<S: NamedService> NamedService for Deferred<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for Deferred<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    RB::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.ready.get().cloned() {
            Some(mut service) => Box::pin(async move {
                std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                Ok(service.call(request).await?.map(Body::new))
            }),
            None => Box::pin(std::future::ready(Ok(Status::unavailable(
                "the server is starting: waiting for the database; retry later",
            )
            .into_http()))),
        }
    }
}
