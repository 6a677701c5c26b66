//! The simulator spoken to directly, the way other DSM clients do:
//! democratic-csi's GETs with `_sid` in the query and unquoted names,
//! synology-csi's `id` cookie, Cinder/jt-pve's POST forms with quoted
//! values, the `target_id` quoting rule, CSRF's SynoToken, API discovery and
//! the protocol error codes. Also the `dsm-sim` binary itself.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{sim_config, start_empty, ACCOUNT, PASSWORD};
use serde_json::{json, Value};
use synology::sim::Simulator;

async fn get(base: &str, cgi: &str, query: &str) -> Value {
    let url = format!("{base}/webapi/{cgi}?{query}");
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "DSM answers 200 even for API errors");
    response.json().await.unwrap()
}

async fn post(base: &str, cgi: &str, form: &[(&str, &str)], cookie: Option<&str>) -> Value {
    let mut request = reqwest::Client::new().post(format!("{base}/webapi/{cgi}")).form(form);
    if let Some(sid) = cookie {
        request = request.header("cookie", format!("id={sid}"));
    }
    request.send().await.unwrap().json().await.unwrap()
}

async fn login(base: &str, extra: &str) -> Value {
    get(
        base,
        "auth.cgi",
        &format!("api=SYNO.API.Auth&version=6&method=login&account={ACCOUNT}&passwd={PASSWORD}&format=sid{extra}"),
    )
    .await
}

fn code(answer: &Value) -> i64 {
    assert_eq!(answer["success"], json!(false), "{answer}");
    answer["error"]["code"].as_i64().unwrap()
}

#[tokio::test]
async fn democratic_csi_and_synology_csi_wire_forms_work() {
    let h = start_empty().await;
    let base = h.sim.base_url();
    let sid = login(&base, "&session=democratic-csi").await["data"]["sid"].as_str().unwrap().to_owned();

    // democratic-csi: GET, unquoted strings, `_sid` last in the query.
    let created = get(&base, "entry.cgi", &format!("type=BLUN&name=pvc-1&location=/volume1&size=1073741824&dev_attribs=[{{%22dev_attrib%22:%22can_snapshot%22,%22enable%22:1}}]&api=SYNO.Core.ISCSI.LUN&version=1&method=create&_sid={sid}")).await;
    let uuid = created["data"]["uuid"].as_str().unwrap().to_owned();
    assert_eq!(created["data"]["lun_id"], json!(1));
    assert!(h.dir.path().join("luns").join(format!("{uuid}.img")).exists());
    let target = get(&base, "entry.cgi", &format!("auth_type=0&max_sessions=0&name=pvc-1&iqn=iqn.2000-01.com.synology:csi.pvc-1&api=SYNO.Core.ISCSI.Target&version=1&method=create&_sid={sid}")).await;
    assert_eq!(target["data"]["target_id"], json!(1));
    let mapped = get(
        &base,
        "entry.cgi",
        &format!("uuid=%22{uuid}%22&target_ids=[1]&api=SYNO.Core.ISCSI.LUN&method=map_target&version=1&_sid={sid}"),
    )
    .await;
    assert_eq!(mapped, json!({"success": true}));
    let listed = get(&base, "entry.cgi", &format!("api=SYNO.Core.ISCSI.Target&version=1&path=entry.cgi&method=list&additional=[%22mapped_lun%22,+%22status%22]&_sid={sid}")).await;
    assert_eq!(listed["data"]["targets"][0]["mapped_luns"], json!([{"lun_uuid": uuid, "mapping_index": 1}]));

    // synology-csi: the SID in the `id` cookie, the LUN looked up by name through `uuid`.
    let by_name = reqwest::Client::new()
        .get(format!("{base}/webapi/entry.cgi?api=SYNO.Core.ISCSI.LUN&method=get&uuid=%22pvc-1%22&version=1"))
        .header("cookie", format!("id={sid}"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(by_name["data"]["lun"]["uuid"], json!(uuid));
    assert_eq!(by_name["data"]["lun"]["type"], json!(263));

    // A digits-only description decodes as a number and is refused.
    let bad = get(&base, "entry.cgi", &format!("api=SYNO.Core.ISCSI.LUN&version=1&method=create&name=pvc-2&location=/volume1&size=1024&type=BLUN&description=123456789012345678901234567&_sid={sid}")).await;
    assert_eq!(code(&bad), 18990403);

    // target_id must be a JSON string: bare → 18990710, quoted id or name → found.
    let target_get = |id: &str| format!("api=SYNO.Core.ISCSI.Target&version=1&method=get&target_id={id}&_sid={sid}");
    assert_eq!(code(&get(&base, "entry.cgi", &target_get("1")).await), 18990710);
    assert_eq!(get(&base, "entry.cgi", &target_get("%221%22")).await["data"]["target"]["name"], json!("pvc-1"));
    assert_eq!(get(&base, "entry.cgi", &target_get("%22pvc-1%22")).await["data"]["target"]["target_id"], json!(1));

    // Cinder / jt-pve: POST forms with every value JSON-quoted, SID in the form or the cookie.
    let volume = post(
        &base,
        "entry.cgi",
        &[
            ("api", "\"SYNO.Core.Storage.Volume\""),
            ("version", "1"),
            ("method", "\"get\""),
            ("volume_path", "\"/volume1\""),
            ("_sid", &format!("\"{sid}\"")),
        ],
        None,
    )
    .await;
    assert_eq!(volume["data"]["volume"]["fs_type"], json!("btrfs"));
    assert!(volume["data"]["volume"]["size_free_byte"].is_string());
    let quoted_uuid = format!("\"{uuid}\"");
    let deleted = post(
        &base,
        "entry.cgi",
        &[
            ("api", "SYNO.Core.ISCSI.LUN"),
            ("version", "1"),
            ("method", "delete"),
            ("uuid", "\"\""),
            ("uuids", &format!("[{quoted_uuid}]")),
        ],
        Some(&sid),
    )
    .await;
    assert_eq!(deleted, json!({"success": true}));
    h.sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn protocol_errors_discovery_and_logout() {
    let h = start_empty().await;
    let base = h.sim.base_url();
    let info =
        get(&base, "query.cgi", "api=SYNO.API.Info&version=1&method=query&query=SYNO.API.Auth,SYNO.Core.ISCSI.LUN")
            .await;
    // DSM 7 advertises the login on entry.cgi (auth.cgi still answers it).
    assert_eq!(info["data"]["SYNO.API.Auth"]["path"], json!("entry.cgi"));
    assert_eq!(info["data"]["SYNO.Core.ISCSI.LUN"]["requestFormat"], json!("JSON"));
    assert_eq!(info["data"].as_object().unwrap().len(), 2);

    assert_eq!(
        code(
            &get(
                &base,
                "auth.cgi",
                &format!("api=SYNO.API.Auth&version=6&method=login&account={ACCOUNT}&passwd=wrong")
            )
            .await
        ),
        400
    );
    assert_eq!(code(&get(&base, "auth.cgi", "api=SYNO.API.Auth&version=9&method=login").await), 104);
    let sid = login(&base, "").await["data"]["sid"].as_str().unwrap().to_owned();
    let call = |api: &str, version: &str, method: &str, sid: &str| {
        format!("api={api}&version={version}&method={method}&_sid={sid}")
    };
    assert_eq!(code(&get(&base, "entry.cgi", "api=SYNO.Core.ISCSI.LUN&method=list").await), 101);
    assert_eq!(code(&get(&base, "entry.cgi", &call("SYNO.Core.Nope", "1", "list", &sid)).await), 102);
    assert_eq!(code(&get(&base, "entry.cgi", &call("SYNO.Core.ISCSI.LUN", "1", "load_snapshot", &sid)).await), 103);
    assert_eq!(code(&get(&base, "entry.cgi", &call("SYNO.Core.ISCSI.LUN", "2", "list", &sid)).await), 104);
    assert_eq!(code(&get(&base, "entry.cgi", &call("SYNO.Core.ISCSI.LUN", "1", "list", "unknown-sid")).await), 119);
    assert_eq!(code(&get(&base, "entry.cgi", "api=SYNO.Core.ISCSI.LUN&version=1&method=list").await), 119);
    assert_eq!(
        get(&base, "entry.cgi", &call("SYNO.Core.ISCSI.LUN", "1", "list", &sid)).await["data"],
        json!({"luns": []})
    );
    assert_eq!(get(&base, "auth.cgi", &call("SYNO.API.Auth", "1", "logout", &sid)).await, json!({"success": true}));
    assert_eq!(code(&get(&base, "entry.cgi", &call("SYNO.Core.ISCSI.LUN", "1", "list", &sid)).await), 119);

    let faults = reqwest::Client::new()
        .post(format!("{base}/sim/faults"))
        .json(&json!({"error_code_next": 18990002}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(faults["error_code_next"], json!(18990002));
    let sid = login(&base, "").await["data"]["sid"].as_str().unwrap().to_owned();
    assert_eq!(code(&get(&base, "entry.cgi", &call("SYNO.Core.ISCSI.LUN", "1", "list", &sid)).await), 18990002);
    let stats: Value = reqwest::get(format!("{base}/sim/stats")).await.unwrap().json().await.unwrap();
    assert_eq!(stats["logins"], json!(2));
    h.sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn csrf_protection_requires_the_synotoken() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sim_config(&dir, SocketAddr::from(([127, 0, 0, 1], 0)));
    config.csrf = true;
    let sim = Simulator::start(config).await.unwrap();
    let base = sim.base_url();
    let data = login(&base, "&enable_syno_token=yes").await["data"].clone();
    let (sid, token) = (data["sid"].as_str().unwrap(), data["synotoken"].as_str().unwrap());
    let list = format!("api=SYNO.Core.ISCSI.LUN&version=1&method=list&_sid={sid}");
    assert_eq!(code(&get(&base, "entry.cgi", &list).await), 105);
    assert_eq!(get(&base, "entry.cgi", &format!("{list}&SynoToken={token}")).await["success"], json!(true));
    let with_header = reqwest::Client::new()
        .get(format!("{base}/webapi/entry.cgi?{list}"))
        .header("X-SYNO-TOKEN", token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(with_header["success"], json!(true));

    // The client asks for the token and echoes it.
    let dsm = common::client(&sim);
    dsm.create_lun(&common::thin_lun("csrf-ok", 1 << 20)).await.unwrap();
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn dsm_sim_binary_serves_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsm-sim"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--state-dir"])
        .arg(dir.path())
        .args(["--account", ACCOUNT, "--session-timeout", "60", "--fault-error-code-next", "18990541"])
        .env("DSM_SIM_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if reqwest::get(format!("{base}/sim/stats")).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dsm = synology::dsm::DsmClient::new(common::client_config(&base, PASSWORD)).unwrap();
    let first = if ready { Some(dsm.list_luns().await) } else { None };
    let second = if ready { Some(dsm.create_lun(&common::thin_lun("from-binary", 1 << 20)).await) } else { None };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ready, "dsm-sim did not start listening");
    assert_eq!(first.unwrap().unwrap_err().code(), Some(18990541), "--fault-error-code-next applies");
    second.unwrap().unwrap();
    assert!(dir.path().join("state.json").exists());
}
