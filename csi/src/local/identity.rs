//! The Identity service of the local plugin: its name and version, its
//! capabilities (controller service, topology, online expansion) and a
//! readiness probe that checks the state directory is there.

use tonic::{Request, Response, Status};

use super::{reply, LocalPlugin, PLUGIN_NAME};
use crate::v1::identity_server::Identity;
use crate::v1::plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};
use crate::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest, GetPluginInfoResponse,
    PluginCapability, ProbeRequest, ProbeResponse,
};

#[tonic::async_trait]
impl Identity for LocalPlugin {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        tracing::info!(rpc = %"GetPluginInfo", "CSI call");
        Ok(Response::new(GetPluginInfoResponse {
            name: PLUGIN_NAME.to_owned(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        tracing::info!(rpc = %"GetPluginCapabilities", "CSI call");
        let service =
            |kind: service::Type| PluginCapability { r#type: Some(Type::Service(Service { r#type: kind as i32 })) };
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: vec![
                service(service::Type::ControllerService),
                service(service::Type::VolumeAccessibilityConstraints),
                // Volumes may be expanded while published.
                PluginCapability {
                    r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                        r#type: volume_expansion::Type::Online as i32,
                    })),
                },
            ],
        }))
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
