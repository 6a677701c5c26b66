//! `volume import-synology`: the volumes a Synology NAS already holds (made
//! by democratic-csi's synology-iscsi driver or by berth) as volume specs
//! `volume register` takes, with the volume ids democratic-csi used, so a
//! cluster moving from Nomad + democratic-csi keeps its data and its ids.

use std::collections::BTreeMap;
use std::path::Path;

use synology::config::DriverConfig;
use synology::provisioner::{ExistingVolume, Provisioner};

/// An HCL string literal.
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string().replace("${", "$${").replace("%{", "%%{")
}

/// The volume spec `volume register` reads for `volume`.
fn spec(volume: &ExistingVolume, plugin_id: &str) -> String {
    let mut text = format!(
        "# On the NAS: LUN {}, {} bytes. Register with: berth volume register FILE\nid          = {}\nname        = {}\n\
         type        = \"csi\"\nplugin_id   = {}\nexternal_id = {}\n\ncapability {{\n  access_mode     = \
         \"single-node-writer\"\n  attachment_mode = \"file-system\"\n}}\n\ncontext {{\n",
        volume.lun,
        volume.capacity_bytes,
        quoted(&volume.id),
        quoted(&volume.id),
        quoted(plugin_id),
        quoted(&volume.id)
    );
    let context: BTreeMap<_, _> = volume.context.iter().collect();
    for (key, value) in context {
        text.push_str(&format!("  {key} = {}\n", quoted(value)));
    }
    text.push_str("}\n");
    text
}

/// Lists the NAS's volumes with the YAML at `config` and prints or writes
/// their specs; the exit code.
pub async fn synology(config: &Path, dir: Option<&Path>, plugin_id: &str) -> i32 {
    let result = async {
        let yaml = std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
        let driver = DriverConfig::from_yaml(&yaml).map_err(|e| format!("{}: {e}", config.display()))?;
        let provisioner = Provisioner::from_config(&driver).map_err(|e| format!("{}: {e}", config.display()))?;
        provisioner.existing_volumes().await.map_err(|e| e.message().to_owned())
    };
    let volumes = match result.await {
        Ok(volumes) => volumes,
        Err(e) => {
            eprintln!("Error listing the NAS's volumes: {e}");
            return 1;
        }
    };
    if volumes.is_empty() {
        eprintln!("No volumes on the NAS match this configuration (namePrefix/nameSuffix and baseiqn).");
        return 0;
    }
    for volume in &volumes {
        let text = spec(volume, plugin_id);
        match dir {
            Some(dir) => {
                let file = dir.join(format!("{}.hcl", volume.id.replace('/', "_")));
                if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&file, text)) {
                    eprintln!("Error writing {}: {e}", file.display());
                    return 1;
                }
                println!("{} (LUN {}) -> {}", volume.id, volume.lun, file.display());
            }
            None => println!("{text}"),
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_volume_specs_with_the_context() {
        let volume = ExistingVolume {
            id: "pvc-1".into(),
            lun: "k8s-pvc-1".into(),
            capacity_bytes: 1 << 30,
            context: [
                ("iqn".to_owned(), "iqn.2000-01.com.synology:csi.k8s-pvc-1".to_owned()),
                ("lun".into(), "1".into()),
            ]
            .into(),
        };
        let text = spec(&volume, "synology");
        let parsed = crate::jobspec::parse_volume("pvc-1.hcl", &text).unwrap();
        assert_eq!(
            (parsed.id.as_str(), parsed.external_id.as_str(), parsed.plugin_id.as_str()),
            ("pvc-1", "pvc-1", "synology")
        );
        assert_eq!(parsed.context["lun"], "1");
    }
}
