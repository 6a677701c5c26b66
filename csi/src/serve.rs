//! Serving CSI services on a unix socket, for every plugin berth ships
//! (the local plugin, the Synology provisioner): a stale socket file is
//! replaced (any other file in the way is an error), the directory is
//! created, and the socket is removed again when serving ends. Clients
//! that send the socket's path as the HTTP/2 authority (Python's grpcio)
//! are served too ([`crate::authority`]).

use std::future::Future;
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::service::Routes;
use tonic::transport::server::{Connected, UdsConnectInfo};
use tonic::transport::Server;

use crate::authority::AuthorityFix;

use crate::client::{socket_path, ClientError};

/// Why a plugin could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The endpoint is not a unix socket path.
    #[error(transparent)]
    Endpoint(#[from] ClientError),
    /// The socket could not be set up.
    #[error("{op} socket {}: {source}", path.display())]
    Socket {
        /// What was being done.
        op: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("serving on {}: {source}", path.display())]
    Serve {
        /// The socket path.
        path: PathBuf,
        /// The transport error.
        source: tonic::transport::Error,
    },
}

/// Serves `routes` on the unix socket at `endpoint` (`unix:///path` or a
/// path) until `shutdown` resolves. `plugin` names the plugin in logs.
pub async fn serve_unix(
    routes: Routes,
    endpoint: &str,
    plugin: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let path = socket_path(endpoint)?;
    let socket_error = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ServeError::Socket { op, path, source }
    };
    remove_stale_socket(&path).map_err(socket_error("removing the stale", &path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(socket_error("creating the directory of the", &path))?;
    }
    let listener = UnixListener::bind(&path).map_err(socket_error("binding", &path))?;
    tracing::info!(plugin, socket = %path.display(), "CSI plugin serving");
    let served = Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener).map(|s| s.map(AuthorityFix::new)), shutdown)
        .await;
    let _ = std::fs::remove_file(&path);
    tracing::info!(plugin, socket = %path.display(), "CSI plugin stopped");
    served.map_err(|source| ServeError::Serve { path, source })
}

impl Connected for AuthorityFix<UnixStream> {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.get_ref().connect_info()
    }
}

/// Removes a socket file at `path`; nothing there is fine, anything but a
/// socket is refused.
fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => {
            Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a file that is not a socket is in the way"))
        }
    }
}
