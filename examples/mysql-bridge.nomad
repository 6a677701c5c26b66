# The workshop's CSI-era MySQL job shape (group-level network with a static
# port, `ports = ["db"]` in the task), in bridge mode: the container gets its
# own namespace and address on the node's bridge, and 3306 is mapped from
# every host address. No CNI plugins are needed.
job "mysql-bridge" {
  datacenters = ["dc1"]
  type        = "service"

  group "mysql-server" {
    count = 1

    network {
      mode = "bridge"
      port "db" {
        static = 3306
      }
    }

    restart {
      attempts = 10
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "mysql-server" {
      driver = "docker"

      env {
        MYSQL_ROOT_PASSWORD = "password"
      }

      config {
        image = "berth-test/mariadb:latest"
        ports = ["db"]
      }

      resources {
        cpu    = 500
        memory = 1024
      }
    }
  }
}
