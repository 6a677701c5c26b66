# The built-in local CSI plugin: volumes are directories or loop-attached
# image files on this node. Run it before creating volumes:
#   berth job run examples/csi-local-plugin.nomad
job "csi-local" {
  type = "system"

  group "plugin" {
    task "plugin" {
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/berth"
        args    = ["csi-plugin", "local", "--state-dir", "/var/lib/berth-csi-local", "--node-id", "${node.unique.id}"]
      }

      csi_plugin {
        id   = "local"
        type = "monolith"
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
