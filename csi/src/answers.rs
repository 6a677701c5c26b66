//! The answers every built-in plugin gives the same way: its name and
//! version, the capability lists of its services, and a request's capacity
//! range checked into bytes. Plugins say which capabilities they have;
//! the message shapes live here once.

use tonic::Status;

use crate::v1::plugin_capability::{self, service, volume_expansion, Service, VolumeExpansion};
use crate::v1::{
    controller_service_capability, node_service_capability, CapacityRange, ControllerGetCapabilitiesResponse,
    ControllerServiceCapability, GetPluginCapabilitiesResponse, GetPluginInfoResponse, NodeGetCapabilitiesResponse,
    NodeServiceCapability, PluginCapability,
};

/// `GetPluginInfo`: `name` at Berth's version.
pub fn plugin_info(name: &str) -> GetPluginInfoResponse {
    GetPluginInfoResponse {
        name: name.to_owned(),
        vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
        manifest: Default::default(),
    }
}

/// `GetPluginCapabilities`: the services offered, and online volume
/// expansion (volumes may grow while published) when `online_expansion`.
pub fn plugin_capabilities(services: &[service::Type], online_expansion: bool) -> GetPluginCapabilitiesResponse {
    let mut capabilities: Vec<PluginCapability> = services
        .iter()
        .map(|kind| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(Service { r#type: *kind as i32 })),
        })
        .collect();
    if online_expansion {
        capabilities.push(PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(VolumeExpansion {
                r#type: volume_expansion::Type::Online as i32,
            })),
        });
    }
    GetPluginCapabilitiesResponse { capabilities }
}

/// `ControllerGetCapabilities` listing `kinds`.
pub fn controller_capabilities(
    kinds: &[controller_service_capability::rpc::Type],
) -> ControllerGetCapabilitiesResponse {
    use controller_service_capability::{Rpc, Type};
    let capabilities = kinds
        .iter()
        .map(|kind| ControllerServiceCapability { r#type: Some(Type::Rpc(Rpc { r#type: *kind as i32 })) })
        .collect();
    ControllerGetCapabilitiesResponse { capabilities }
}

/// `NodeGetCapabilities` listing `kinds`.
pub fn node_capabilities(kinds: &[node_service_capability::rpc::Type]) -> NodeGetCapabilitiesResponse {
    use node_service_capability::{Rpc, Type};
    let capabilities = kinds
        .iter()
        .map(|kind| NodeServiceCapability { r#type: Some(Type::Rpc(Rpc { r#type: *kind as i32 })) })
        .collect();
    NodeGetCapabilitiesResponse { capabilities }
}

/// A request's capacity range as (required, limit) bytes (0: not set):
/// INVALID_ARGUMENT for negative values, OUT_OF_RANGE when required
/// exceeds the limit.
pub fn capacity_bounds(range: Option<&CapacityRange>) -> Result<(u64, u64), Status> {
    let Some(range) = range else { return Ok((0, 0)) };
    let bytes = |field: &str, value: i64| {
        u64::try_from(value).map_err(|_| Status::invalid_argument(format!("{field} must not be negative")))
    };
    let (required, limit) = (bytes("required_bytes", range.required_bytes)?, bytes("limit_bytes", range.limit_bytes)?);
    if limit > 0 && required > limit {
        return Err(Status::out_of_range(format!("required_bytes {required} exceeds limit_bytes {limit}")));
    }
    Ok((required, limit))
}
