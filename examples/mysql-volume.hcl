# A 1 GiB ext4 volume in a sparse image file, served by the local plugin:
#   berth volume create examples/mysql-volume.hcl
id        = "mysql"
name      = "mysql"
type      = "csi"
plugin_id = "local"

capacity_min = "1GiB"
capacity_max = "4GiB"

capability {
  access_mode     = "single-node-writer"
  attachment_mode = "file-system"
}

mount_options {
  fs_type     = "ext4"
  mount_flags = ["noatime"]
}

parameters {
  backing = "image"
}
