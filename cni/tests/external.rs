//! External CNI networks run with Debian's reference plugins
//! (`/usr/lib/cni`, package containernetworking-plugins), inside a
//! throw-away namespace that plays the host.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use cni::external::{self, Attachment};
use cni::netns::NetNs;
use cni::PortMapping;
use common::{in_fresh_host, nomad_style_conflist, sh};

const PLUGINS: &str = "/usr/lib/cni";

fn attachment(id: &str, ns: &NetNs, ports: Vec<PortMapping>) -> Attachment {
    Attachment {
        container_id: id.into(),
        netns: ns.path().to_path_buf(),
        ifname: "eth0".into(),
        cni_path: vec![PLUGINS.into()],
        ports,
        args: vec![],
    }
}

#[test]
fn a_user_conflist_runs_with_the_reference_plugins_and_deletes_cleanly() {
    assert!(Path::new(PLUGINS).join("bridge").is_file(), "needs Debian's containernetworking-plugins");
    in_fresh_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let conf = external::load(&nomad_style_conflist(dir.path(), "cniref0", "172.31.9.0/24"), "refnet").unwrap();
        let cache = dir.path().join("cache");
        let ns = NetNs::create(&dir.path().join("netns"), "c1").unwrap();
        let att = attachment("c1", &ns, vec![PortMapping { host_port: 8088, container_port: 80 }]);
        let result = external::add(&conf, &att, &cache).await.unwrap();
        let ip = external::result_ipv4(&result).expect("an address in the result");
        assert!(ip.to_string().starts_with("172.31.9."), "{result}");
        let l = ns.run(|| TcpListener::bind("0.0.0.0:80").unwrap()).unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let _ = s.write_all(b"via portmap");
            }
        });
        let mut s = TcpStream::connect_timeout(&"127.0.0.1:8088".parse().unwrap(), Duration::from_secs(3)).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, "via portmap");
        assert!(sh("iptables-save -t nat").contains("CNI-DN-"));

        external::del(&conf, &att, &cache).await.unwrap();
        assert!(!sh("iptables-save -t nat").contains("-j CNI-DN-"), "portmap's per-container chain is gone");
        assert!(std::fs::read_dir(dir.path().join("ipam/refnet")).unwrap().all(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n == "lock" || n.starts_with("last_reserved_ip")
        }));
        NetNs::delete(&dir.path().join("netns"), "c1").unwrap();
    });
}

#[test]
fn a_missing_plugin_is_named_with_the_path_searched() {
    in_fresh_host(|| async {
        let dir = tempfile::tempdir().unwrap();
        let confdir = dir.path().join("conf");
        std::fs::create_dir_all(&confdir).unwrap();
        std::fs::write(
            confdir.join("n.conflist"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"nosuchplugin"}]}"#,
        )
        .unwrap();
        let conf = external::load(&confdir, "n").unwrap();
        let ns = NetNs::create(&dir.path().join("netns"), "c").unwrap();
        let mut att = attachment("c", &ns, vec![]);
        att.cni_path = vec![dir.path().join("bin")];
        let e = external::add(&conf, &att, &dir.path().join("cache")).await.unwrap_err().to_string();
        assert!(e.contains("CNI plugin \"nosuchplugin\": not found in cni_path"), "{e}");
        NetNs::delete(&dir.path().join("netns"), "c").unwrap();
    });
}
