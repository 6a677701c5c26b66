//! `volume create|register|status|delete|deregister|detach|snapshot` and
//! `plugin status`, with Nomad's output.

use std::collections::BTreeMap;

use serde_json::Value;

use super::api::ApiClient;
use super::format;
use crate::util::{format_bytes, short_id};

fn read_spec(file: &str) -> Result<crate::structs::CsiVolume, String> {
    let src = if file == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("Error reading stdin: {e}"))?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("Error reading file {file:?}: {e}"))?
    };
    crate::jobspec::parse_volume(file, &src).map_err(|e| format!("Error parsing the volume specification: {e}"))
}

/// `volume create FILE` / `volume register FILE`.
pub async fn submit(api: &ApiClient, file: &str, create: bool) -> i32 {
    let v = match read_spec(file) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let path = if create { format!("/v1/volume/csi/{}/create", v.id) } else { format!("/v1/volume/csi/{}", v.id) };
    let id = v.id.clone();
    let reply: Result<Value, _> = api.put(&path, &serde_json::json!({ "Volumes": [v] })).await;
    match reply {
        Ok(r) if create => {
            let external = r["Volumes"][0]["ExternalID"].as_str().unwrap_or_default().to_string();
            println!("Created external volume {external} with ID {id}");
            0
        }
        Ok(_) => {
            println!("Volume {id:?} registered");
            0
        }
        Err(e) => {
            eprintln!("Error {} volume: {e}", if create { "creating" } else { "registering" });
            1
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// `volume status [id]`.
pub async fn status(api: &ApiClient, id: Option<&str>, verbose: bool) -> i32 {
    let Some(id) = id else {
        let list: Vec<Value> = match api.get("/v1/volumes?type=csi").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("Error querying volumes: {e}");
                return 1;
            }
        };
        if list.is_empty() {
            eprintln!("No CSI volumes");
            return 0;
        }
        println!("Container Storage Interface");
        let mut rows = vec!["ID|Name|Namespace|Plugin ID|Schedulable|Access Mode".to_string()];
        for v in &list {
            rows.push(format!(
                "{}|{}|{}|{}|{}|{}",
                str_of(v, "ID"),
                str_of(v, "Name"),
                str_of(v, "Namespace"),
                str_of(v, "PluginID"),
                v["Schedulable"].as_bool().unwrap_or(false),
                str_of(v, "AccessMode"),
            ));
        }
        println!("{}", format::list(&rows));
        return 0;
    };
    let v: Value = match api.get(&format!("/v1/volume/csi/{id}")).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("Error querying volume: {e}");
            return 1;
        }
    };
    let caps = v["RequestedCapabilities"].as_array().cloned().unwrap_or_default();
    let join = |key: &str| caps.iter().map(|c| str_of(c, key).to_string()).collect::<Vec<_>>().join(", ");
    let mount = match &v["MountOptions"] {
        Value::Object(m) => format!(
            "fs_type: {} flags: {}",
            m.get("FSType").and_then(Value::as_str).unwrap_or("<none>"),
            m.get("MountFlags")
                .and_then(Value::as_array)
                .map(|f| f.len())
                .filter(|n| *n > 0)
                .map(|_| "[REDACTED]")
                .unwrap_or("<none>")
        ),
        _ => "<none>".into(),
    };
    let mut rows = vec![
        format!("ID|{}", str_of(&v, "ID")),
        format!("Name|{}", str_of(&v, "Name")),
        format!("Namespace|{}", str_of(&v, "Namespace")),
        format!("External ID|{}", str_of(&v, "ExternalID")),
        format!("Plugin ID|{}", str_of(&v, "PluginID")),
        format!("Provider|{}", str_of(&v, "Provider")),
        format!("Version|{}", str_of(&v, "ProviderVersion")),
        format!("Capacity|{}", format_bytes(v["Capacity"].as_i64().unwrap_or(0).max(0) as u64)),
        format!("Schedulable|{}", v["Schedulable"].as_bool().unwrap_or(false)),
        format!("Controllers Healthy|{}", count(&v, "ControllersHealthy")),
        format!("Controllers Expected|{}", count(&v, "ControllersExpected")),
        format!("Nodes Healthy|{}", count(&v, "NodesHealthy")),
        format!("Nodes Expected|{}", count(&v, "NodesExpected")),
        format!("Access Mode|{}", join("AccessMode")),
        format!("Attachment Mode|{}", join("AttachmentMode")),
        format!("Mount Options|{mount}"),
        format!("Namespace|{}", str_of(&v, "Namespace")),
    ];
    rows.dedup();
    let reason = str_of(&v, "SchedulableReason");
    if !reason.is_empty() {
        rows.push(format!("Unschedulable Because|{reason}"));
    }
    println!("{}", format::kv(&rows));
    if verbose {
        if let Some(t) = v["Topologies"].as_array().filter(|t| !t.is_empty()) {
            println!("\nTopologies");
            for (i, topo) in t.iter().enumerate() {
                let segs: Vec<String> = topo["Segments"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or_default())).collect())
                    .unwrap_or_default();
                println!("Topology {i}: {}", segs.join(", "));
            }
        }
    }
    let claims = v["Claims"].as_array().cloned().unwrap_or_default();
    println!("\nClaims");
    if claims.is_empty() {
        println!("No claims");
    } else {
        let mut rows = vec!["Allocation ID|Node ID|Job ID|Task Group|Mode|State|Why".to_string()];
        for c in &claims {
            let alloc = str_of(c, "AllocationID");
            let node = str_of(c, "NodeID");
            rows.push(format!(
                "{}|{}|{}|{}|{}|{}|{}",
                if verbose { alloc } else { short_id(alloc) },
                if verbose { node } else { short_id(node) },
                str_of(c, "JobID"),
                str_of(c, "TaskGroup"),
                str_of(c, "Mode"),
                str_of(c, "State"),
                str_of(c, "Reason"),
            ));
        }
        println!("{}", format::list(&rows));
    }
    0
}

fn secrets_header(secrets: &[String]) -> Option<String> {
    (!secrets.is_empty()).then(|| secrets.join(","))
}

/// `volume delete [-secret k=v]… ID`.
pub async fn delete(api: &ApiClient, id: &str, secrets: &[String]) -> i32 {
    let path = format!("/v1/volume/csi/{id}/delete");
    let result: Result<Value, _> = match secrets_header(secrets) {
        Some(h) => api.delete_with_header(&path, crate::wire::SECRETS_HEADER, &h).await,
        None => api.delete(&path).await,
    };
    match result {
        Ok(_) => {
            println!("Successfully deleted volume {id:?}!");
            0
        }
        Err(e) => {
            eprintln!("Error deleting volume: {e}");
            1
        }
    }
}

/// `volume deregister [-force] ID`.
pub async fn deregister(api: &ApiClient, id: &str, force: bool) -> i32 {
    match api.delete::<Value>(&format!("/v1/volume/csi/{id}?force={force}")).await {
        Ok(_) => {
            println!("Successfully deregistered volume {id:?}!");
            0
        }
        Err(e) => {
            eprintln!("Error deregistering volume: {e}");
            1
        }
    }
}

/// `volume detach ID NODE`.
pub async fn detach(api: &ApiClient, id: &str, node: &str) -> i32 {
    match api.delete::<Value>(&format!("/v1/volume/csi/{id}/detach?node={node}")).await {
        Ok(r) => {
            println!("Released {} claim(s) of volume {id:?} on node {node}", r["Released"].as_u64().unwrap_or(0));
            0
        }
        Err(e) => {
            eprintln!("Error detaching volume: {e}");
            1
        }
    }
}

/// `volume snapshot create VOLUME [NAME]`.
pub async fn snapshot_create(api: &ApiClient, volume: &str, name: Option<&str>) -> i32 {
    let body = serde_json::json!({ "Snapshots": [{ "SourceVolumeID": volume, "Name": name.unwrap_or_default() }] });
    match api.put::<_, Value>("/v1/volumes/snapshot", &body).await {
        Ok(r) => {
            for s in r["Snapshots"].as_array().into_iter().flatten() {
                println!("Snapshot ID  Volume ID  Size  Create Time  Ready?");
                println!(
                    "{}  {}  {}  {}  {}",
                    str_of(s, "ID"),
                    volume,
                    format_bytes(s["SizeBytes"].as_i64().unwrap_or(0).max(0) as u64),
                    s["CreateTime"].as_i64().unwrap_or(0),
                    s["IsReady"].as_bool().unwrap_or(false)
                );
            }
            0
        }
        Err(e) => {
            eprintln!("Error snapshotting volume: {e}");
            1
        }
    }
}

/// `volume snapshot list -plugin ID [-volume ID]`.
pub async fn snapshot_list(api: &ApiClient, plugin: &str, volume: Option<&str>) -> i32 {
    let path = format!("/v1/volumes/snapshot?plugin_id={plugin}&volume_id={}", volume.unwrap_or_default());
    match api.get::<Value>(&path).await {
        Ok(r) => {
            let list = r["Snapshots"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                eprintln!("No snapshots");
                return 0;
            }
            let mut rows = vec!["Snapshot ID|External ID|Size|Creation Time|Ready?".to_string()];
            for s in &list {
                rows.push(format!(
                    "{}|{}|{}|{}|{}",
                    str_of(s, "ID"),
                    str_of(s, "ExternalSourceVolumeID"),
                    format_bytes(s["SizeBytes"].as_i64().unwrap_or(0).max(0) as u64),
                    s["CreateTime"].as_i64().unwrap_or(0),
                    s["IsReady"].as_bool().unwrap_or(false)
                ));
            }
            println!("{}", format::list(&rows));
            0
        }
        Err(e) => {
            eprintln!("Error listing snapshots: {e}");
            1
        }
    }
}

/// `volume snapshot delete PLUGIN SNAPSHOT`.
pub async fn snapshot_delete(api: &ApiClient, plugin: &str, snapshot: &str) -> i32 {
    match api.delete::<Value>(&format!("/v1/volumes/snapshot?plugin_id={plugin}&snapshot_id={snapshot}")).await {
        Ok(_) => {
            println!("Deleted snapshot {snapshot}.");
            0
        }
        Err(e) => {
            eprintln!("Error deleting snapshot: {e}");
            1
        }
    }
}

/// `plugin status [id]`.
pub async fn plugin_status(api: &ApiClient, id: Option<&str>) -> i32 {
    let Some(id) = id else {
        let list: Vec<Value> = match api.get("/v1/plugins?type=csi").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("Error querying CSI plugins: {e}");
                return 1;
            }
        };
        if list.is_empty() {
            eprintln!("No CSI plugins");
            return 0;
        }
        println!("Container Storage Interface");
        let mut rows = vec!["ID|Provider|Controllers Healthy/Expected|Nodes Healthy/Expected".to_string()];
        for p in &list {
            rows.push(format!(
                "{}|{}|{}/{}|{}/{}",
                str_of(p, "ID"),
                str_of(p, "Provider"),
                count(p, "ControllersHealthy"),
                count(p, "ControllersExpected"),
                count(p, "NodesHealthy"),
                count(p, "NodesExpected"),
            ));
        }
        println!("{}", format::list(&rows));
        return 0;
    };
    let p: Value = match api.get(&format!("/v1/plugin/csi/{id}")).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error querying CSI plugin: {e}");
            return 1;
        }
    };
    let rows = vec![
        format!("ID|{}", str_of(&p, "ID")),
        format!("Provider|{}", str_of(&p, "Provider")),
        format!("Version|{}", str_of(&p, "Version")),
        format!("Controllers Healthy|{}", count(&p, "ControllersHealthy")),
        format!("Controllers Expected|{}", count(&p, "ControllersExpected")),
        format!("Nodes Healthy|{}", count(&p, "NodesHealthy")),
        format!("Nodes Expected|{}", count(&p, "NodesExpected")),
    ];
    println!("{}", format::kv(&rows));
    let mut instances = vec!["Node ID|Type|Allocation ID|Healthy|Health".to_string()];
    for (kind, key) in [("controller", "Controllers"), ("node", "Nodes")] {
        let map: BTreeMap<String, Value> = serde_json::from_value(p[key].clone()).unwrap_or_default();
        for (node, info) in map {
            instances.push(format!(
                "{}|{kind}|{}|{}|{}",
                short_id(&node),
                short_id(str_of(&info, "AllocID")),
                info["Healthy"].as_bool().unwrap_or(false),
                str_of(&info, "HealthDescription"),
            ));
        }
    }
    println!("\nInstances\n{}", format::list(&instances));
    0
}
