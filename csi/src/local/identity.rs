//! The Identity service of the local plugin: its name and version, its
//! capabilities (controller service, topology, online expansion) and a
//! readiness probe that checks the state directory is there.

use tonic::{Request, Response, Status};

use super::{reply, LocalPlugin, PLUGIN_NAME};
use crate::answers;
use crate::v1::identity_server::Identity;
use crate::v1::plugin_capability::service;
use crate::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest, GetPluginInfoResponse,
    ProbeRequest, ProbeResponse,
};

#[tonic::async_trait]
impl Identity for LocalPlugin {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        tracing::info!(rpc = %"GetPluginInfo", "CSI call");
        Ok(Response::new(answers::plugin_info(PLUGIN_NAME)))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        tracing::info!(rpc = %"GetPluginCapabilities", "CSI call");
        // Volumes may be expanded while published.
        Ok(Response::new(answers::plugin_capabilities(
            &[service::Type::ControllerService, service::Type::VolumeAccessibilityConstraints],
            true,
        )))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        tracing::debug!(rpc = %"Probe", "CSI call");
        let root = self.inner.store.root();
        let result = match std::fs::metadata(root) {
            Ok(meta) if meta.is_dir() => Ok(ProbeResponse { ready: Some(true) }),
            Ok(_) => Err(Status::failed_precondition(format!("state directory {} is not a directory", root.display()))),
            Err(e) => Err(Status::failed_precondition(format!("state directory {}: {e}", root.display()))),
        };
        reply("Probe", "", result)
    }
}
