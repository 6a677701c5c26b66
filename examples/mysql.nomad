# The seed workshop MySQL job (HCL1 style: quoted env keys, port_map,
# task-level network with a static port).
job "mysql-server" {
  datacenters = ["dc1"]
  type = "service"

  group "mysql-server" {
    count = 1

    restart {
      attempts = 10
      interval = "5m"
      delay = "25s"
      mode = "delay"
    }

    task "mysql-server" {
      driver = "docker"

      env {
        "MYSQL_ROOT_PASSWORD" = "password"
      }

      config {
        image = "berth-test/mariadb:latest"
        port_map {
          db = 3306
        }
      }

      resources {
        cpu = 500
        memory = 1024
        network {
          port "db" {
            static = 3306
          }
        }
      }

      service {
        name = "mysql-server"
        port = "db"
        check {
          type     = "tcp"
          interval = "10s"
          timeout  = "2s"
        }
      }
    }
  }
}
