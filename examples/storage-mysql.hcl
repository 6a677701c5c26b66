# A 3–5 GiB iSCSI LUN on the Synology NAS, made by the agent's built-in
# Synology plugin (examples/agent-synology.hcl), no plugin job needed:
#   berth volume create examples/storage-mysql.hcl
# examples/mysql-csi.nomad then runs MariaDB with its data on it.
id        = "mysql"
name      = "mysql"
type      = "csi"
plugin_id = "synology"

capacity_min = "3GiB"
capacity_max = "5GiB"

capability {
  access_mode     = "single-node-writer"
  attachment_mode = "file-system"
}

mount_options {
  fs_type     = "ext4"
  mount_flags = ["noatime"]
}
