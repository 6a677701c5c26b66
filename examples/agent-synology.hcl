# Agent config with the built-in Synology plugin: volumes with
# plugin_id = "synology" are provisioned on the NAS and attached over iSCSI
# on this node, no plugin job needed.
#   berth agent -dev -config examples/agent-synology.hcl
plugin "synology" {
  config {
    # democratic-csi's synology-iscsi YAML, unchanged.
    driver_config_file = "examples/synology-iscsi.yaml"
    # id        = "synology"   # the plugin_id volume specs name
    # initiator = "auto"       # auto | open-iscsi | userspace
  }
}
