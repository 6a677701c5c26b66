//! What a NAS holds before berth ever talks to it, so that every listing
//! berth reads has objects that are not berth's: DSM's default target
//! ("Synology iSCSI Target", always there), a Virtual Machine Manager disk
//! (`VDISK_BLUN`, which synology-csi's type filter hides), and another
//! tool's LUN with a snapshot of its own, mapped to the default target.
//! Made once per state dir, when the simulator starts on an empty one
//! (`SimConfig::fresh_nas`).

use super::{now_ms, San};
use crate::sim::error::SimError;
use crate::sim::store::{LunRec, Mapping, SnapRec, Store, TargetRec};

/// The default target's IQN, as DSM names it (host name, then a hex tag).
pub(crate) const DEFAULT_TARGET_IQN: &str = "iqn.2000-01.com.synology:dsm-sim.default-target.5b2c1f0e";
/// Names of the LUNs a fresh NAS holds.
pub const FRESH_NAS_LUNS: [&str; 2] = ["vmm-ubuntu-disk-1", "windows-backup"];
/// Names of the targets a fresh NAS holds.
pub const FRESH_NAS_TARGETS: [&str; 1] = ["Synology iSCSI Target"];

impl San {
    /// Makes the NAS's own objects, unless this state dir has had them.
    pub(crate) fn seed_fresh_nas(&mut self) -> Result<(), SimError> {
        if self.store.state.seeded {
            return Ok(());
        }
        self.seed_lun(FRESH_NAS_LUNS[0], "VDISK_BLUN", 8 << 30, "Virtual Machine Manager disk")?;
        let backup = self.seed_lun(FRESH_NAS_LUNS[1], "BLUN", 2 << 30, "Hyper Backup destination")?;
        let state = &mut self.store.state;
        state.last_target_id += 1;
        state.targets.push(TargetRec {
            target_id: state.last_target_id,
            name: FRESH_NAS_TARGETS[0].to_owned(),
            iqn: DEFAULT_TARGET_IQN.to_owned(),
            max_sessions: 0,
            auth_type: 0,
            user: String::new(),
            password: String::new(),
            mutual_user: String::new(),
            mutual_password: String::new(),
            mapped: vec![Mapping { lun_uuid: backup.uuid.clone(), mapping_index: 1 }],
            is_default: true,
        });
        let snapshot = uuid::Uuid::new_v4().to_string();
        Store::copy_sparse(&self.store.lun_file(&backup.uuid), &self.store.snapshot_file(&snapshot))?;
        let state = &mut self.store.state;
        state.last_snapshot_id += 1;
        state.snapshots.push(SnapRec {
            uuid: snapshot,
            snapshot_id: state.last_snapshot_id,
            name: "GMT+01-2026.11.30-03.00.00".to_owned(),
            description: "nightly".to_owned(),
            taken_by: "Snapshot Replication".to_owned(),
            parent_uuid: backup.uuid.clone(),
            parent_lun_id: backup.lun_id,
            root_path: backup.location.clone(),
            create_time: now_ms() / 1000,
            total_size: backup.size,
            is_user_locked: false,
            is_app_consistent: false,
        });
        state.seeded = true;
        self.store.save()
    }

    fn seed_lun(&mut self, name: &str, type_str: &str, size: u64, description: &str) -> Result<LunRec, SimError> {
        let uuid = uuid::Uuid::new_v4().to_string();
        Store::set_file_size(&self.store.lun_file(&uuid), size)?;
        self.store.state.last_lun_id += 1;
        let lun = LunRec {
            uuid,
            name: name.to_owned(),
            lun_id: self.store.state.last_lun_id,
            size,
            location: "/volume1".to_owned(),
            type_str: type_str.to_owned(),
            description: description.to_owned(),
            dev_attribs: super::lun::default_dev_attribs(type_str),
            deleting_until_ms: None,
            locked_until_ms: None,
        };
        self.store.state.luns.push(lun.clone());
        Ok(lun)
    }
}
