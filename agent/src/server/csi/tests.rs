//! The server's side of claims against a recording plugin: the grant waits
//! for a conflicting claim, publishes through the controller when it
//! attaches, detaches once the claim ends, and a down node's claims are
//! released after the timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;

use super::*;
use crate::server::state::StateStore;
use crate::server::ServerConfig;
use crate::structs::{
    access_mode, client_status, desired, CsiControllerInfo, CsiNodeInfo, CsiVolumeCapability, Job, Task, TaskGroup,
    VolumeRequest,
};
use crate::wire::node::AllocClientUpdate;

/// Records every call and answers as an attaching controller would.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl PluginCalls for Recorder {
    fn call<'a>(
        &'a self,
        node: &'a Node,
        plugin_id: &'a str,
        call: PluginCall,
    ) -> BoxFuture<'a, Result<PluginReply, PluginError>> {
        async move {
            let (entry, reply) = match call {
                PluginCall::Publish { external_id, node_id, read_only, .. } => (
                    format!("publish {external_id} to {node_id} ro={read_only}"),
                    PluginReply::Published { context: BTreeMap::from([("lun".to_string(), "3".to_string())]) },
                ),
                PluginCall::Unpublish { external_id, node_id, .. } => {
                    (format!("unpublish {external_id} from {node_id}"), PluginReply::Done)
                }
                other => (format!("{other:?}"), PluginReply::Done),
            };
            self.0.lock().push(format!("{entry} via {}/{plugin_id}", node.id));
            Ok(reply)
        }
        .boxed()
    }
}

fn node(id: &str) -> Node {
    let info = CsiInfo { plugin_id: "nas".into(), healthy: true, ..Default::default() };
    Node {
        id: id.into(),
        name: id.into(),
        secret_id: format!("secret-{id}"),
        datacenter: "dc1".into(),
        csi_controller_plugins: BTreeMap::from([(
            "nas".to_string(),
            CsiInfo {
                controller_info: Some(CsiControllerInfo { supports_attach_detach: true, ..Default::default() }),
                ..info.clone()
            },
        )]),
        csi_node_plugins: BTreeMap::from([(
            "nas".to_string(),
            CsiInfo { node_info: Some(CsiNodeInfo { id: format!("iqn.{id}"), ..Default::default() }), ..info },
        )]),
        ..Default::default()
    }
}

fn alloc(id: &str, node_id: &str) -> Allocation {
    let mut tg = TaskGroup { name: "db".into(), count: 1, tasks: vec![Task::default()], ..Default::default() };
    tg.volumes.insert(
        "data".into(),
        VolumeRequest {
            volume_type: "csi".into(),
            source: "db".into(),
            access_mode: access_mode::SINGLE_NODE_WRITER.into(),
            attachment_mode: "file-system".into(),
            ..Default::default()
        },
    );
    let job = Job { id: "mysql".into(), namespace: "default".into(), task_groups: vec![tg], ..Default::default() };
    Allocation {
        id: id.into(),
        namespace: "default".into(),
        name: "mysql.db[0]".into(),
        node_id: node_id.into(),
        job_id: "mysql".into(),
        job: Some(Arc::new(job)),
        task_group: "db".into(),
        desired_status: desired::RUN.into(),
        client_status: client_status::RUNNING.into(),
        ..Default::default()
    }
}

async fn server_with(allocs: Vec<Allocation>) -> (Arc<Server>, Arc<Recorder>) {
    let config = ServerConfig { csi_claim_release_timeout: Duration::from_secs(60), ..Default::default() };
    let server = Server::start_with_state(Arc::new(StateStore::in_memory()), config);
    let recorder = Arc::new(Recorder::default());
    server.set_plugin_calls(recorder.clone());
    for n in ["n1", "n2"] {
        server.register_node(node(n)).unwrap();
    }
    let volume = CsiVolume {
        id: "db".into(),
        namespace: "default".into(),
        external_id: "lun-db".into(),
        plugin_id: "nas".into(),
        requested_capabilities: vec![CsiVolumeCapability {
            access_mode: access_mode::SINGLE_NODE_WRITER.into(),
            attachment_mode: "file-system".into(),
        }],
        ..Default::default()
    };
    server.state.apply(WriteBatch { volumes: vec![volume], allocs, ..Default::default() }).unwrap();
    (server, recorder)
}

#[tokio::test]
async fn a_grant_waits_for_the_holder_then_publishes_and_the_release_detaches() {
    let (server, recorder) = server_with(vec![alloc("a1", "n1"), alloc("a2", "n2")]).await;
    // Both were placed (as if by two plans); whoever asks waits for the other.
    let ClaimGrant::Wait(why) = server.claim_volumes("n2", "a2").await.unwrap() else { panic!("granted to a2") };
    assert!(why.contains("a1") && why.contains("another node"), "{why}");
    assert!(recorder.0.lock().is_empty(), "published while a claim conflicts");

    // a1 stops and its client unpublishes: a2 is granted, through the controller.
    let stop = AllocClientUpdate {
        id: "a1".into(),
        client_status: client_status::COMPLETE.into(),
        csi_volumes_released: true,
        ..Default::default()
    };
    server.update_allocs("n1", vec![stop]).unwrap();
    let ClaimGrant::Granted(granted) = server.claim_volumes("n2", "a2").await.unwrap() else { panic!("still waiting") };
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].publish_context.get("lun").map(String::as_str), Some("3"));
    assert!(recorder.0.lock().contains(&"publish lun-db to iqn.n2 ro=false via n1/nas".to_string()));
    wait_for_call(&recorder, "unpublish lun-db from iqn.n1 via n1/nas").await;
}

async fn wait_for_call(recorder: &Recorder, prefix: &str) {
    for _ in 0..100 {
        if recorder.0.lock().iter().any(|c| c.starts_with(prefix)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no call {prefix:?}: {:?}", recorder.0.lock());
}

#[tokio::test]
async fn claims_on_a_node_down_past_the_timeout_are_released() {
    let (server, recorder) = server_with(vec![alloc("a1", "n1")]).await;
    server.mark_node_down("n1").unwrap();
    assert_eq!(server.release_stranded_claims(Duration::from_secs(3600)).unwrap(), 0, "released before the timeout");
    assert_eq!(server.state.snapshot().volume_claimers("default", "db").len(), 1);
    assert_eq!(server.release_stranded_claims(Duration::ZERO).unwrap(), 1);
    let snap = server.state.snapshot();
    assert!(snap.volume_claimers("default", "db").is_empty());
    let a = snap.alloc("a1").unwrap();
    assert!(a.csi_volumes_released && a.csi_release_reason.contains("down"), "{:?}", a.csi_release_reason);
    let view = volume_view(&snap, &plugins(&snap), &snap.volume("default", "db").unwrap());
    assert!(view.claims.is_empty());
    drop(snap);
    // The controller still detaches it from the lost node (n2's controller answers).
    wait_for_call(&recorder, "unpublish lun-db from iqn.n1 via n2/nas").await;
}
