//! The simulator's HTTPS side, as a NAS with its default self-signed
//! certificate: the same API on a second port over TLS (rustls), the
//! certificate made at start (rcgen) for `dsm-sim`, `localhost` and
//! 127.0.0.1, so clients must skip verification (`allowInsecure`) as they
//! must for a real DSM.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Marks a request that arrived over TLS (so "redirect HTTP to HTTPS" does
/// not send it round again); set by this module only.
pub(crate) const VIA_TLS: &str = "x-dsm-sim-tls";

/// The acceptor with a fresh self-signed certificate.
fn acceptor() -> Result<tokio_rustls::TlsAcceptor, String> {
    let names = vec!["dsm-sim".to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| format!("certificate: {e}"))?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| format!("key: {e}"))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(|e| format!("TLS config: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` over TLS on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, app: Router) {
    let acceptor = match acceptor() {
        Ok(acceptor) => acceptor,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve HTTPS");
            return;
        }
    };
    loop {
        let Ok((tcp, peer)) = listener.accept().await else { continue };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                request.headers_mut().insert(VIA_TLS, axum::http::HeaderValue::from_static("1"));
                app.clone().oneshot(request)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
