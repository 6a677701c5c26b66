# MariaDB whose data lives on the "mysql" CSI volume
# (examples/mysql-volume.hcl) and survives `job stop -purge` + `job run`.
job "mysql-csi" {
  group "db" {
    volume "data" {
      type            = "csi"
      source          = "mysql"
      access_mode     = "single-node-writer"
      attachment_mode = "file-system"
    }

    network {
      port "db" {
        static = 3306
      }
    }

    task "mariadb" {
      driver = "docker"

      config {
        image = "berth-test/mariadb:latest"
        ports = ["db"]
      }

      volume_mount {
        volume      = "data"
        destination = "/var/lib/mysql"
      }

      env {
        MYSQL_ROOT_PASSWORD = "password"
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
