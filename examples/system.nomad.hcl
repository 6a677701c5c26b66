# One allocation per node.
job "node-agent" {
  type        = "system"
  datacenters = ["*"]

  group "agent" {
    network {
      port "metrics" {
        static = 9100
      }
    }

    service {
      name     = "node-agent"
      port     = "metrics"
      provider = "nomad"

      check {
        type     = "http"
        path     = "/metrics"
        interval = "30s"
        timeout  = "5s"
      }
    }

    task "agent" {
      driver = "raw_exec"

      config {
        command = "/bin/sh"
        args    = ["-c", "while true; do sleep 60; done"]
      }

      env {
        NODE_NAME = "${node.unique.name}"
      }
    }
  }
}
