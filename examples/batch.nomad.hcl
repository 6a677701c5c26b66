# A run-to-completion job.
job "report" {
  type        = "batch"
  datacenters = ["dc1"]

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  group "report" {
    reschedule {
      attempts = 2
    }

    task "report" {
      driver = "raw_exec"

      config {
        command = "/bin/sh"
        args    = ["-c", "echo started at $(date); sleep 2; echo done"]
      }

      kill_timeout = "10s"

      logs {
        max_files     = 3
        max_file_size = 5
      }
    }
  }
}
