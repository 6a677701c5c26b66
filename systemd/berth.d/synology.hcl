# The built-in Synology plugin: volume specs with plugin_id = "synology"
# are provisioned on the NAS and attached over iSCSI on this node.
# Written by `berth install --synology FILE` (FILE is copied next to it).
plugin "synology" {
  config {
    driver_config_file = "/etc/berth.d/synology-iscsi.yaml"
  }
}
