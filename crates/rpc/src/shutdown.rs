//! Serving until a shutdown signal, then a bounded grace period.
//!
//! After the signal the server stops accepting connections; calls in flight get `grace` to
//! finish. A call still running after it is abandoned and the server returns anyway: a root
//! service must stop when its supervisor says so (systemd's own stop timeout would otherwise
//! kill it mid-write). The services keep that safe by writing every intent before its side
//! effect, so an abandoned call is finished or undone by the next start's recovery.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, Router};

/// How a serve ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server stopped on its own (every connection closed) or all calls finished in time.
    Clean,
    /// Calls were still running when the grace period ran out.
    GraceExpired,
}

/// Serves `router` on `incoming` until `shutdown` completes, then for at most `grace` while
/// calls in flight finish.
///
/// # Errors
/// The server's transport error.
pub async fn serve_with_grace<L, I, IO, IE>(
    router: Router<L>,
    incoming: I,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<Ended, tonic::transport::Error>
where
    L: tower::Layer<tonic::service::Routes> + Clone,
    L::Service: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = router.serve_with_incoming_shutdown(incoming, async move {
        stopped.await.ok();
    });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map(|()| Ended::Clean),
        () = shutdown => {}
    }
    stop.send(()).ok();
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result.map(|()| Ended::Clean),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "calls still running after the shutdown grace period; stopping without them"
            );
            Ok(Ended::GraceExpired)
        }
    }
}
