//! The native service registry's endpoints, in Nomad's shapes:
//! `/v1/services`, `/v1/service/:name` (blocking, `?tag=`, `?choose=`),
//! `DELETE /v1/service/:name/:id`, a job's and an allocation's services,
//! an allocation's check results, and the client's sync of one
//! allocation's registrations.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, Query};
use serde::Serialize;

use super::internal::secret;
use super::{decode_body, json_with_index, ApiError, ApiResult, ApiState, Headers, QueryOptions, RawQuery};
use crate::server::services::choose;
use crate::structs::{CheckQueryResult, ServiceRegistration};

/// `?namespace=` (default `default`, `*` for all).
fn namespace_matches(raw: &std::collections::HashMap<String, String>) -> impl Fn(&str) -> bool + '_ {
    let want = raw.get("namespace").map(String::as_str).unwrap_or("default");
    move |ns| want == "*" || ns == want
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NamespaceServices {
    namespace: String,
    services: Vec<ServiceStub>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceStub {
    service_name: String,
    tags: Vec<String>,
}

/// `GET /v1/services`: each namespace's service names with every tag
/// their instances carry.
pub async fn list(api: ApiState, Query(q): Query<QueryOptions>, Query(raw): RawQuery) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let in_namespace = namespace_matches(&raw);
    let mut by_ns: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for r in snap.service_registrations().filter(|r| in_namespace(&r.namespace)) {
        let tags = by_ns.entry(&r.namespace).or_default().entry(&r.service_name).or_default();
        tags.extend(r.tags.iter().map(String::as_str));
    }
    let out: Vec<NamespaceServices> = by_ns
        .into_iter()
        .map(|(ns, services)| NamespaceServices {
            namespace: ns.to_string(),
            services: services
                .into_iter()
                .map(|(name, tags)| ServiceStub {
                    service_name: name.to_string(),
                    tags: tags.into_iter().map(str::to_string).collect(),
                })
                .collect(),
        })
        .collect();
    Ok(json_with_index(&out, index, q.pretty()))
}

/// `GET /v1/service/:name`: its instances, oldest first; `?tag=` keeps
/// those carrying the tag, `?choose=n|key` picks `n` for the asker `key`.
pub async fn read(
    api: ApiState,
    Path(name): Path<String>,
    Query(q): Query<QueryOptions>,
    Query(raw): RawQuery,
) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let in_namespace = namespace_matches(&raw);
    let tag = raw.get("tag");
    let mut instances: Vec<ServiceRegistration> = snap
        .service_registrations()
        .filter(|r| r.service_name == name && in_namespace(&r.namespace))
        .filter(|r| tag.is_none_or(|t| r.tags.contains(t)))
        .map(|r| (**r).clone())
        .collect();
    instances.sort_by_key(|r| (r.create_index, r.id.clone()));
    if let Some(parameter) = raw.get("choose") {
        instances = choose(instances, parameter)?;
    }
    Ok(json_with_index(&instances, index, q.pretty()))
}

/// `DELETE /v1/service/:name/:id`.
pub async fn delete(api: ApiState, Path((name, id)): Path<(String, String)>, Query(raw): RawQuery) -> ApiResult {
    let namespace = raw.get("namespace").map(String::as_str).unwrap_or("default");
    let index = api.server()?.delete_service(namespace, &name, &id)?;
    Ok(json_with_index(&serde_json::json!({}), index, false))
}

/// `GET /v1/job/:id/services`.
pub async fn of_job(
    api: ApiState,
    Path(job): Path<String>,
    Query(q): Query<QueryOptions>,
    Query(raw): RawQuery,
) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let in_namespace = namespace_matches(&raw);
    let list: Vec<&ServiceRegistration> =
        snap.service_registrations().filter(|r| r.job_id == job && in_namespace(&r.namespace)).map(|r| &**r).collect();
    Ok(json_with_index(&list, index, q.pretty()))
}

/// `GET /v1/allocation/:id/services`.
pub async fn of_alloc(api: ApiState, Path(alloc): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    snap.alloc(&alloc).ok_or_else(|| ApiError::not_found("alloc not found"))?;
    let list: Vec<ServiceRegistration> = snap.services_of_alloc(&alloc).iter().map(|r| (**r).clone()).collect();
    Ok(json_with_index(&list, index, q.pretty()))
}

/// `GET /v1/allocation/:id/checks`: the latest result of each of the
/// allocation's checks, by check ID.
pub async fn checks(api: ApiState, Path(alloc): Path<String>, Query(q): Query<QueryOptions>) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    snap.alloc(&alloc).ok_or_else(|| ApiError::not_found("alloc not found"))?;
    let results: BTreeMap<String, CheckQueryResult> = snap
        .services_of_alloc(&alloc)
        .iter()
        .flat_map(|r| r.checks.iter().map(|c| (c.id.clone(), c.clone())))
        .collect();
    Ok(json_with_index(&results, index, q.pretty()))
}

/// `PUT /v1/internal/node/:id/services/:alloc`: the allocation's whole set
/// of registrations, from the node running it.
pub async fn sync(
    api: ApiState,
    Path((node, alloc)): Path<(String, String)>,
    headers: Headers,
    body: Bytes,
) -> ApiResult {
    let registrations: Vec<ServiceRegistration> = decode_body(&body)?;
    let server = api.server()?;
    let index = server.sync_alloc_services(&node, &secret(&headers), &alloc, registrations)?;
    Ok(json_with_index(&serde_json::json!({}), index, false))
}
