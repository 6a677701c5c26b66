# HCL2 variables and locals, with runtime references left for the client.
variable "image" {
  type        = string
  default     = "nginx:1.27"
  description = "Container image to run"
}

variable "replicas" {
  type    = number
  default = 2
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

locals {
  app  = "web"
  tier = "${local.app}-frontend"
}

job "web" {
  datacenters = var.datacenters

  meta {
    tier = local.tier
  }

  group "web" {
    count = var.replicas

    network {
      mode = "bridge"
      port "http" {
        to = 80
      }
    }

    task "nginx" {
      driver = "docker"

      config {
        image = var.image
        ports = ["http"]
        args  = ["--root", "${NOMAD_TASK_DIR}/html"]
      }

      env {
        HOST_NAME = "${attr.unique.hostname}"
        REPLICAS  = "${var.replicas}"
      }

      template {
        data        = <<-EOT
          server_name {{ env "attr.unique.hostname" }};
          root ${NOMAD_TASK_DIR}/html;
        EOT
        destination = "local/nginx.conf"
        change_mode = "signal"
        change_signal = "SIGHUP"
      }

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
