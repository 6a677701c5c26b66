//! Which LUNs on the NAS are this provisioner's volumes, and finding
//! them: volume id ↔ LUN name (democratic-csi's: namePrefix + id +
//! nameSuffix), look-ups that wait out DSM's action lock, listings that
//! leave other tools' LUNs, VM disks and DSM's own objects alone, and the
//! volumes already on the NAS that `volume import-synology` registers.

use std::collections::HashMap;

use csi::v1::Volume;
use tonic::Status;

use super::naming::lun_name;
use super::{bytes_i64, dsm_status, Inner};
use crate::dsm::{Lun, Target, TargetAuth};

/// How the description of every LUN berth makes begins.
pub(super) const BERTH_DESCRIPTION: &str = "berth volume ";

/// A Virtual Machine Manager disk: never a volume, never touched.
pub(super) fn is_vm_disk(lun: &Lun) -> bool {
    lun.type_str.starts_with("VDISK")
}

/// DSM lists a LUN it is still removing as `deleting`.
pub(super) fn being_deleted(lun: &Lun) -> bool {
    lun.status == "deleting"
}

/// A volume already on the NAS, as `volume register` wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingVolume {
    /// The volume id (democratic-csi's: the LUN name without namePrefix
    /// and nameSuffix).
    pub id: String,
    /// The LUN's name on the NAS.
    pub lun: String,
    /// Its size in bytes.
    pub capacity_bytes: u64,
    /// The context the node attaches it with.
    pub context: HashMap<String, String>,
}

impl Inner {
    /// What the node needs to attach the volume.
    pub(super) fn context(&self, target: &Target, lun_number: u32) -> HashMap<String, String> {
        let s = &self.settings;
        let auth = match s.auth {
            TargetAuth::None => "none",
            TargetAuth::Chap { .. } => "chap",
            TargetAuth::MutualChap { .. } => "mutual_chap",
        };
        let mut context = HashMap::from([
            ("node_attach_driver".to_owned(), "iscsi".to_owned()),
            ("provisioner_driver".to_owned(), "synology-iscsi".to_owned()),
            ("iqn".to_owned(), target.iqn.clone()),
            ("portal".to_owned(), s.portal.clone()),
            ("portals".to_owned(), s.portals.join(",")),
            ("interface".to_owned(), s.interface.clone()),
            ("lun".to_owned(), lun_number.to_string()),
            ("auth_type".to_owned(), auth.to_owned()),
        ]);
        if let Some(id) = &s.instance_id {
            context.insert("provisioner_driver_instance_id".to_owned(), id.clone());
        }
        context
    }

    /// The LUN (and target) name of volume `id`: namePrefix + id +
    /// nameSuffix, as democratic-csi names it.
    pub(super) fn lun_name_of(&self, id: &str) -> Result<String, Status> {
        lun_name(&self.settings.name_prefix, id, &self.settings.name_suffix)
    }

    /// The volume id of the LUN named `name`: namePrefix and nameSuffix
    /// taken off, as democratic-csi's volume ids leave them out.
    pub(super) fn volume_id_of(&self, name: &str) -> String {
        let s = &self.settings;
        let (prefix, suffix) = (s.name_prefix.to_lowercase(), s.name_suffix.to_lowercase());
        let bare = name.strip_prefix(prefix.as_str()).unwrap_or(name);
        bare.strip_suffix(suffix.as_str()).unwrap_or(bare).to_owned()
    }

    /// Whether a LUN on the NAS is one of this provisioner's volumes, for
    /// listings: its name carries namePrefix/nameSuffix, and, when both are
    /// empty (any LUN's name would), berth's description marks it. Other
    /// tools' LUNs, VM disks and DSM's own objects are never listed.
    pub(super) fn is_ours(&self, lun: &Lun) -> bool {
        let s = &self.settings;
        let affixed =
            lun.name.starts_with(&s.name_prefix.to_lowercase()) && lun.name.ends_with(&s.name_suffix.to_lowercase());
        let marked =
            !(s.name_prefix.is_empty() && s.name_suffix.is_empty()) || lun.description.starts_with(BERTH_DESCRIPTION);
        affixed && marked && !is_vm_disk(lun)
    }

    /// The LUN named `name`, if DSM lists it.
    pub(super) async fn lun(&self, name: &str) -> Result<Option<Lun>, Status> {
        self.dsm.get_lun(name).await.map_err(|e| dsm_status(&format!("looking up LUN {name}"), e))
    }

    /// Volume `id`'s LUN: by its democratic-csi name, else by the id itself
    /// when that already carries the affixes (berth named volumes by their
    /// full LUN name before it followed democratic-csi's ids).
    pub(super) async fn volume_lun(&self, id: &str) -> Result<Option<Lun>, Status> {
        let name = self.lun_name_of(id)?;
        if let Some(lun) = self.lun(&name).await? {
            return Ok(Some(lun));
        }
        let s = &self.settings;
        let affixed = !(s.name_prefix.is_empty() && s.name_suffix.is_empty())
            && id.starts_with(&s.name_prefix.to_lowercase())
            && id.ends_with(&s.name_suffix.to_lowercase());
        if affixed {
            return self.lun(id).await;
        }
        Ok(None)
    }

    /// `lun` once DSM's action lock (a clone or restore being copied) is
    /// off: growing or mapping a locked LUN fails on a real NAS.
    pub(super) async fn unlocked(&self, lun: Lun) -> Result<Lun, Status> {
        if !lun.is_action_locked {
            return Ok(lun);
        }
        tracing::info!(lun = %lun.name, "waiting for DSM to finish copying the LUN");
        self.dsm
            .wait_unlocked(&lun.name)
            .await
            .map_err(|e| dsm_status(&format!("waiting for LUN {}", lun.name), e))?
            .ok_or_else(|| Status::internal(format!("LUN {} vanished while DSM copied it", lun.name)))
    }

    pub(super) async fn our_luns(&self) -> Result<Vec<Lun>, Status> {
        let luns = self.dsm.list_luns().await.map_err(|e| dsm_status("listing LUNs", e))?;
        Ok(luns.into_iter().filter(|l| self.is_ours(l)).collect())
    }

    pub(super) async fn list_volumes(&self) -> Result<Vec<Volume>, Status> {
        let luns = self.our_luns().await?;
        let targets = self.dsm.list_targets().await.map_err(|e| dsm_status("listing targets", e))?;
        Ok(luns
            .into_iter()
            .map(|lun| {
                let mapped = targets
                    .iter()
                    .find_map(|t| t.mapped_luns.iter().find(|m| m.lun_uuid == lun.uuid).map(|m| (t, m.mapping_index)));
                Volume {
                    capacity_bytes: bytes_i64(lun.size),
                    volume_context: mapped.map(|(t, index)| self.context(t, index)).unwrap_or_default(),
                    volume_id: self.volume_id_of(&lun.name),
                    content_source: None,
                    accessible_topology: Vec::new(),
                }
            })
            .collect())
    }

    /// Every volume this configuration manages that the NAS holds, whoever
    /// made it (democratic-csi or berth): a LUN named namePrefix + id +
    /// nameSuffix, mapped on a target of the same name whose IQN is
    /// baseiqn + that name, as both create them.
    pub(super) async fn existing_volumes(&self) -> Result<Vec<ExistingVolume>, Status> {
        let luns = self.dsm.list_luns().await.map_err(|e| dsm_status("listing LUNs", e))?;
        let targets = self.dsm.list_targets().await.map_err(|e| dsm_status("listing targets", e))?;
        let s = &self.settings;
        let mut found = Vec::new();
        for lun in luns.into_iter().filter(|l| !is_vm_disk(l) && !being_deleted(l)) {
            let id = self.volume_id_of(&lun.name);
            if self.lun_name_of(&id).ok().as_deref() != Some(lun.name.as_str()) {
                continue;
            }
            let expected_iqn = format!("{}{}", s.base_iqn, lun.name);
            let mapped = targets.iter().find_map(|t| {
                let m = t.mapped_luns.iter().find(|m| m.lun_uuid == lun.uuid)?;
                (t.name == lun.name && t.iqn == expected_iqn).then_some((t, m.mapping_index))
            });
            if let Some((target, index)) = mapped {
                found.push(ExistingVolume {
                    id,
                    capacity_bytes: lun.size,
                    context: self.context(target, index),
                    lun: lun.name,
                });
            }
        }
        Ok(found)
    }
}
