//! Nomad Variables' endpoints: `/v1/vars` (metadata, by prefix),
//! `/v1/var/:path` (read, write with `?cas=`, `?lock-acquire`,
//! `?lock-renew`, `?lock-release`, delete), the keyring's
//! `/v1/operator/keyring/keys` and `/rotate`.

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;

use super::{decode_body, json_with_index, ApiError, ApiResult, ApiState, QueryOptions, RawQuery};
use crate::server::{Applied, VarOp};
use crate::structs::{Variable, VariableMetadata};

fn namespace(raw: &std::collections::HashMap<String, String>) -> String {
    raw.get("namespace").filter(|n| !n.is_empty()).cloned().unwrap_or_else(|| "default".into())
}

/// `GET /v1/vars?prefix=`: the metadata of the namespace's variables
/// (`namespace=*` for all), ordered by path.
pub async fn list(api: ApiState, Query(q): Query<QueryOptions>, Query(raw): RawQuery) -> ApiResult {
    let index = api.block(&q).await?;
    let snap = api.server()?.state.snapshot();
    let ns = namespace(&raw);
    let ns = (ns != "*").then_some(ns.as_str());
    let prefix = q.prefix.as_deref().unwrap_or("");
    let out: Vec<&VariableMetadata> = snap.variables_with_prefix(ns, prefix).map(|v| &v.meta).collect();
    Ok(json_with_index(&out, index, q.pretty()))
}

/// `GET /v1/var/:path`.
pub async fn read(
    api: ApiState,
    Path(path): Path<String>,
    Query(q): Query<QueryOptions>,
    Query(raw): RawQuery,
) -> ApiResult {
    let index = api.block(&q).await?;
    let server = api.server()?;
    let snap = server.state.snapshot();
    let v = server.read_variable(&snap, &namespace(&raw), &path)?;
    let v = v.ok_or_else(|| ApiError::not_found("variable not found"))?;
    Ok(json_with_index(&v, index, q.pretty()))
}

/// The operation a `PUT`/`POST` asks for.
fn write_op(raw: &std::collections::HashMap<String, String>) -> Result<VarOp, ApiError> {
    let locks: Vec<VarOp> =
        [("lock-acquire", VarOp::LockAcquire), ("lock-renew", VarOp::LockRenew), ("lock-release", VarOp::LockRelease)]
            .into_iter()
            .filter(|(name, _)| raw.contains_key(*name))
            .map(|(_, op)| op)
            .collect();
    if locks.len() > 1 {
        return Err(ApiError::bad_request("multiple lock operations"));
    }
    match (cas(raw)?, locks.first()) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("CAS can't be used with lock operations")),
        (Some(i), None) => Ok(VarOp::Cas(i)),
        (None, Some(op)) => Ok(*op),
        (None, None) => Ok(VarOp::Set),
    }
}

fn cas(raw: &std::collections::HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    raw.get("cas")
        .filter(|c| !c.is_empty())
        .map(|c| c.parse::<u64>().map_err(|e| ApiError::bad_request(format!("can not parse cas: {e}"))))
        .transpose()
}

/// The answer to a write: the variable (or nothing after a delete), or
/// 409 with what is stored.
fn answer(index: u64, applied: Applied, deleted: bool) -> ApiResult {
    match applied {
        Applied::Conflict(v) => {
            let mut resp = json_with_index(&v, v.meta.modify_index, false);
            *resp.status_mut() = StatusCode::CONFLICT;
            Ok(resp)
        }
        Applied::Done(_) if deleted => {
            let mut resp = json_with_index(&serde_json::json!(null), index, false);
            *resp.status_mut() = StatusCode::NO_CONTENT;
            *resp.body_mut() = axum::body::Body::empty();
            Ok(resp)
        }
        Applied::Done(v) => Ok(json_with_index(&v, index, false)),
    }
}

/// `PUT /v1/var/:path`: create or update (`?cas=` to check the index), or
/// a lock operation.
pub async fn write(api: ApiState, Path(path): Path<String>, Query(raw): RawQuery, body: Bytes) -> ApiResult {
    let op = write_op(&raw)?;
    let mut v: Variable = decode_body(&body)?;
    v.meta.path = path;
    if v.meta.namespace.is_empty() {
        v.meta.namespace = namespace(&raw);
    }
    let (index, applied) = api.server()?.apply_variable(op, v)?;
    answer(index, applied, false)
}

/// `DELETE /v1/var/:path` (`?cas=` to check the index).
pub async fn delete(api: ApiState, Path(path): Path<String>, Query(raw): RawQuery) -> ApiResult {
    let op = match cas(&raw)? {
        Some(i) => VarOp::DeleteCas(i),
        None => VarOp::Delete,
    };
    let mut v = Variable::default();
    v.meta.path = path;
    v.meta.namespace = namespace(&raw);
    let (index, applied) = api.server()?.apply_variable(op, v)?;
    answer(index, applied, true)
}

/// `GET /v1/operator/keyring/keys`.
pub async fn keys(api: ApiState, Query(q): Query<QueryOptions>) -> ApiResult {
    let server = api.server()?;
    Ok(json_with_index(&server.keyring.list(), server.state.index(), q.pretty()))
}

/// `PUT /v1/operator/keyring/rotate` (`?full=true` re-encrypts every
/// variable with the new key at once).
pub async fn rotate(api: ApiState, Query(raw): RawQuery) -> ApiResult {
    let server = api.server()?;
    let key = server.keyring.rotate().map_err(crate::server::ServerError::from)?;
    if super::flag(&raw, "full") {
        server.rekey_variables()?;
    }
    Ok(json_with_index(&serde_json::json!({ "Key": key }), server.state.index(), false))
}
