//! A lab for the kernel iSCSI path: dsm-sim on the host (its LUNs exported
//! through its own tgtd), a node VM with Debian's kernel, iscsid and
//! multipathd, `berth csi-plugin synology --initiator open-iscsi` running in
//! it, and a CSI client on the host reaching the plugin's socket through
//! the VM's agent. Each portal the VM sees (`10.0.2.100:3260`,
//! `10.0.2.101:3260`, …) is a [`Proxy`] in front of the one tgtd, so a test
//! can take a path away or make it silent; DSM's API is at
//! `10.0.2.100:5000`.
//!
//! Used by `tests/kernel_iscsi.rs` and `benches/kernel_iscsi.rs`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use csi::v1::volume_capability::{access_mode, AccessMode, AccessType, BlockVolume, MountVolume};
use csi::v1::{
    CapacityRange, ControllerExpandVolumeRequest, CreateVolumeRequest, DeleteVolumeRequest, NodeExpandVolumeRequest,
    NodeGetVolumeStatsRequest, NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest,
    NodeUnstageVolumeRequest, Volume, VolumeCapability,
};
use csi::{ClientConfig, ClientError, CsiClient, RetryPolicy, Rpc};
use nodevm::{NodeVm, Proxy, UnixForward, VmConfig};
use synology::dsm::{DsmClient, DsmConfig, Password};
use synology::sim::{tgt_control_port, FaultsUpdate, SimConfig, Simulator};

pub const PASSWORD: &str = "vm-lab-nas-pw";
/// The plugin's socket in the VM.
const SOCKET: &str = "/run/berth/csi.sock";

/// How the lab's NAS and node are set up.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// VM host name.
    pub name: String,
    /// Portals the volumes list (each a path to the same tgtd).
    pub portals: usize,
    /// `targetTemplate` lines (auth, max_sessions).
    pub target_template: String,
    /// Daemons the VM runs.
    pub services: Vec<&'static str>,
    /// Extra `berth csi-plugin synology` arguments.
    pub plugin_args: Vec<String>,
}

impl LabConfig {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            portals: 1,
            target_template: "auth_type: 0\n    max_sessions: 1".to_owned(),
            services: vec!["iscsid", "multipathd"],
            plugin_args: Vec::new(),
        }
    }
}

pub struct Lab {
    pub rt: tokio::runtime::Runtime,
    sim: Option<Simulator>,
    pub sim_config: SimConfig,
    pub paths: Vec<Proxy>,
    pub vm: NodeVm,
    pub config: LabConfig,
    client: Option<CsiClient>,
    _forward: Option<UnixForward>,
    host_socket: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The guest address of portal `index`.
pub fn portal(index: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 100 + index as u8), 3260)
}

const DSM_IN_VM: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 100), 5000);

pub fn mount_cap(fs_type: &str) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume { fs_type: fs_type.into(), ..Default::default() })),
        access_mode: Some(AccessMode { mode: access_mode::Mode::SingleNodeWriter as i32 }),
    }
}

pub fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: access_mode::Mode::SingleNodeWriter as i32 }),
    }
}

/// Where the lab stages and publishes volume `id` in the VM.
pub fn staging(id: &str) -> String {
    format!("/var/lib/berth-lab/stage/{id}")
}

pub fn target(id: &str) -> String {
    format!("/var/lib/berth-lab/publish/{id}/mount")
}

/// democratic-csi's synology-iscsi YAML for the lab's NAS as the VM sees it.
fn driver_yaml(portals: usize, target_template: &str) -> String {
    let portals: Vec<String> = (0..portals).map(|i| portal(i).to_string()).collect();
    format!(
        "driver: synology-iscsi\nhttpConnection:\n  protocol: http\n  host: {}\n  port: {}\n  username: admin\n  \
         password: \"{PASSWORD}\"\nsynology:\n  volume: /volume1\niscsi:\n  targetPortal: \"{}\"\n  \
         targetPortals: [{}]\n  baseiqn: \"iqn.2000-01.com.synology:lab.\"\n  namePrefix: \"\"\n  \
         lunTemplate:\n    type: BLUN\n  targetTemplate:\n    {target_template}\n",
        DSM_IN_VM.ip(),
        DSM_IN_VM.port(),
        portals[0],
        portals[1..].iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", "),
    )
}

impl Lab {
    pub fn start(config: LabConfig) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut sim_config = SimConfig::new(
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir.path().join("nas"),
            "admin",
            Password::new(PASSWORD),
        );
        sim_config.portal = SocketAddr::from(([127, 0, 0, 1], free_port()));
        sim_config.export_iscsi = true;
        sim_config.lun_delete_delay = Duration::from_millis(300);
        let sim = rt.block_on(Simulator::start(sim_config.clone())).expect("dsm-sim starts");
        let paths: Vec<Proxy> = (0..config.portals).map(|_| Proxy::start(sim_config.portal).unwrap()).collect();

        let yaml = driver_yaml(config.portals, &config.target_template);
        let mut vm_config = VmConfig::new(&config.name)
            .services(&config.services)
            .forward(DSM_IN_VM, sim.addr())
            .file("/etc/berth/synology-iscsi.yaml", yaml, 0o600)
            .file("/etc/multipath.conf", berth::install::MULTIPATH_CONF, 0o644);
        vm_config.initiator = Some(format!("iqn.2026-12.dev.berth:{}", config.name));
        for (index, path) in paths.iter().enumerate() {
            vm_config = vm_config.forward(portal(index), path.addr());
        }
        let vm = NodeVm::boot(vm_config).expect("the node VM boots");
        let host_socket = dir.path().join("csi.sock");
        let mut lab = Lab {
            rt,
            sim: Some(sim),
            sim_config,
            paths,
            vm,
            config,
            client: None,
            _forward: None,
            host_socket,
            _dir: dir,
        };
        lab.start_plugin();
        lab
    }

    /// Starts the plugin in the VM and connects the host's client to it.
    pub fn start_plugin(&mut self) {
        let args = self.config.plugin_args.join(" ");
        self.vm
            .run(&format!(
                "mkdir -p /run/berth /var/lib/berth/csi /var/lib/berth-lab && \
                 setsid /host/bin/berth csi-plugin synology --endpoint unix://{SOCKET} \
                 --driver-config-file /etc/berth/synology-iscsi.yaml --node-id {} --state-dir /var/lib/berth/csi \
                 --initiator open-iscsi {args} >>/var/log/berth-plugin.log 2>&1 </dev/null &",
                self.config.name
            ))
            .unwrap();
        let started = Instant::now();
        while self.vm.exec(&format!("test -S {SOCKET}")).unwrap().code != 0 {
            assert!(started.elapsed() < Duration::from_secs(60), "the plugin did not start:\n{}", self.plugin_log());
            std::thread::sleep(Duration::from_millis(200));
        }
        self._forward = Some(self.vm.forward_unix(SOCKET, &self.host_socket).unwrap());
        self.connect(Duration::from_secs(120));
    }

    /// (Re)connects the host's client; node calls get `stage_timeout`,
    /// which the plugin takes as its deadline.
    pub fn connect(&mut self, stage_timeout: Duration) {
        let endpoint = format!("unix://{}", self.host_socket.display());
        let config = ClientConfig { retry: RetryPolicy::never(), ..ClientConfig::default() }
            .with_timeout(Rpc::NodeStageVolume, stage_timeout)
            .with_timeout(Rpc::NodeUnstageVolume, stage_timeout);
        self.client = Some(self.rt.block_on(CsiClient::connect(&endpoint, config)).unwrap());
    }

    /// Restarts the plugin with another `targetTemplate`.
    pub fn reconfigure(&mut self, target_template: &str) {
        self.kill_plugin();
        self.config.target_template = target_template.to_owned();
        let yaml = driver_yaml(self.config.portals, target_template);
        std::fs::write(self.vm.work_dir().join("synology-iscsi.yaml"), yaml).unwrap();
        self.sh("install -m 0600 /host/work/synology-iscsi.yaml /etc/berth/synology-iscsi.yaml");
        self.start_plugin();
    }

    /// Kills the plugin (SIGKILL) in the VM.
    pub fn kill_plugin(&mut self) {
        self.client = None;
        self._forward = None;
        let _ = self.vm.exec(&format!("pkill -9 -f '^/host/bin/berth csi-plugin'; sleep 0.2; rm -f {SOCKET}"));
    }

    pub fn plugin_log(&self) -> String {
        self.vm.exec("cat /var/log/berth-plugin.log").map(|o| o.stdout).unwrap_or_default()
    }

    fn client(&self) -> &CsiClient {
        self.client.as_ref().expect("the plugin runs")
    }

    pub fn sim(&self) -> &Simulator {
        self.sim.as_ref().expect("the NAS is up")
    }

    pub fn inject(&self, update: FaultsUpdate) {
        self.sim().inject(&update);
    }

    /// A DSM client looking at the NAS from the host.
    pub fn dsm(&self) -> DsmClient {
        let mut config = DsmConfig::new(format!("http://{}", self.sim_config.listen), "admin", Password::new(PASSWORD));
        config.call_timeout = Duration::from_secs(5);
        DsmClient::new(config).unwrap()
    }

    /// tgtadm on the NAS's tgtd.
    pub fn tgtadm(&self, args: &str) -> String {
        let control = tgt_control_port(self.sim_config.portal);
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("tgtadm -C {control} --lld iscsi {args}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The target id of volume `id` (the target has the volume's name).
    pub fn target_id(&self, id: &str) -> u32 {
        let dsm = self.dsm();
        let targets = self.rt.block_on(dsm.list_targets()).unwrap();
        targets.iter().find(|t| t.name == id).map(|t| t.target_id).expect("the volume's target")
    }

    /// The NAS deletes volume `id`'s target, as an operator in DSM's UI would.
    pub fn nas_deletes_target(&self, id: &str) {
        let target_id = self.target_id(id);
        self.rt.block_on(self.dsm().delete_target(target_id)).unwrap();
    }

    /// tgtd's id of the target `iqn`.
    pub fn tgt_tid(&self, iqn: &str) -> u32 {
        let listing = self.tgtadm("--mode target --op show");
        listing
            .lines()
            .find_map(|l| {
                let (tid, name) = l.strip_prefix("Target ")?.split_once(": ")?;
                (name.trim() == iqn).then(|| tid.parse().ok()).flatten()
            })
            .expect("the target is exported")
    }

    /// Powers the VM off without warning and boots it again; the plugin
    /// is started anew, as its service would be.
    pub fn vm_reboot(&mut self) {
        self.kill_plugin();
        self.vm.reboot().expect("the VM boots again");
        self.start_plugin();
    }

    /// Sessions the NAS's tgtd holds.
    pub fn nas_sessions(&self) -> usize {
        self.tgtadm("--mode target --op show").matches("I_T nexus: ").count()
    }

    pub fn create(&self, name: &str, bytes: i64) -> Result<Volume, ClientError> {
        let request = CreateVolumeRequest {
            name: name.to_owned(),
            capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
            volume_capabilities: vec![mount_cap("ext4")],
            ..Default::default()
        };
        self.rt.block_on(self.client().create_volume(request)).map(|r| r.volume.expect("a volume"))
    }

    pub fn expand(&self, id: &str, bytes: i64) -> Result<(), ClientError> {
        let request = ControllerExpandVolumeRequest {
            volume_id: id.to_owned(),
            capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
            ..Default::default()
        };
        self.rt.block_on(self.client().controller_expand_volume(request)).map(|_| ())
    }

    pub fn delete(&self, id: &str) -> Result<(), ClientError> {
        let request = DeleteVolumeRequest { volume_id: id.to_owned(), ..Default::default() };
        self.rt.block_on(self.client().delete_volume(request)).map(|_| ())
    }

    pub fn stage(
        &self,
        volume: &Volume,
        capability: VolumeCapability,
        secrets: &HashMap<String, String>,
    ) -> Result<(), ClientError> {
        let request = NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging(&volume.volume_id),
            volume_capability: Some(capability),
            volume_context: volume.volume_context.clone(),
            secrets: secrets.clone(),
            ..Default::default()
        };
        self.rt.block_on(self.client().node_stage_volume(request)).map(|_| ())
    }

    pub fn unstage(&self, id: &str) -> Result<(), ClientError> {
        let request = NodeUnstageVolumeRequest { volume_id: id.to_owned(), staging_target_path: staging(id) };
        self.rt.block_on(self.client().node_unstage_volume(request)).map(|_| ())
    }

    pub fn publish(&self, volume: &Volume, capability: VolumeCapability) -> Result<(), ClientError> {
        let id = &volume.volume_id;
        // The CO makes the target's parent directory (CSI spec).
        self.sh(&format!("mkdir -p $(dirname {})", target(id)));
        let request = NodePublishVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: staging(id),
            target_path: target(id),
            volume_capability: Some(capability),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        };
        self.rt.block_on(self.client().node_publish_volume(request)).map(|_| ())
    }

    pub fn unpublish(&self, id: &str) -> Result<(), ClientError> {
        let request = NodeUnpublishVolumeRequest { volume_id: id.to_owned(), target_path: target(id) };
        self.rt.block_on(self.client().node_unpublish_volume(request)).map(|_| ())
    }

    pub fn node_expand(&self, id: &str, path: &str) -> Result<i64, ClientError> {
        let request =
            NodeExpandVolumeRequest { volume_id: id.to_owned(), volume_path: path.to_owned(), ..Default::default() };
        self.rt.block_on(self.client().node_expand_volume(request)).map(|r| r.capacity_bytes)
    }

    /// NodeGetCapabilities: a call that does nothing, to time the round trip.
    pub fn capabilities(&self) {
        self.rt.block_on(self.client().node_get_capabilities(Default::default())).unwrap();
    }

    pub fn stats(&self, id: &str, path: &str) -> Result<(), ClientError> {
        let request =
            NodeGetVolumeStatsRequest { volume_id: id.to_owned(), volume_path: path.to_owned(), ..Default::default() };
        self.rt.block_on(self.client().node_get_volume_stats(request)).map(|_| ())
    }

    /// Runs `script` in the VM; panics with its output and the plugin's log
    /// when it fails.
    pub fn sh(&self, script: &str) -> String {
        match self.vm.run(script) {
            Ok(out) => out,
            Err(e) => panic!("{e}\n--- plugin log ---\n{}", self.plugin_log()),
        }
    }

    /// What the node holds that berth may have made: sessions, node and
    /// discovery records, dm maps, mounts under the lab's paths. Empty when
    /// nothing is left.
    pub fn node_leftovers(&self) -> String {
        self.sh("iscsiadm -m session 2>/dev/null; ls -A /etc/iscsi/nodes /etc/iscsi/send_targets 2>/dev/null \
             | grep -v ':$' | grep -v '^$'; dmsetup ls --target multipath 2>/dev/null | grep -v 'No devices found'; \
             grep -E 'berth-lab|/dev/mapper|/dev/sd' /proc/mounts; true")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_plugin();
        self.vm.power_off();
        if let Some(sim) = self.sim.take() {
            let _ = self.rt.block_on(sim.shutdown());
        }
    }
}
