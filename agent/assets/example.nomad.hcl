# There can only be a single job definition per file. This job is named
# "example" so it will create a job with the ID and Name "example".
#
# The "job" block is the top-most configuration option in the job
# specification. A job is a declarative specification of tasks that berth
# (like Nomad) should run. Jobs have a globally unique name, one or many task
# groups, which are themselves collections of one or many tasks.
job "example" {
  # "datacenters" lists where the tasks may be placed; "*" means any.
  datacenters = ["*"]

  # "service" jobs run until stopped; "batch" jobs run to completion; "system"
  # jobs run one allocation on every eligible node.
  type = "service"

  # The "update" block controls rolling updates: how many allocations are
  # replaced at a time when the job changes.
  update {
    max_parallel     = 1
    min_healthy_time = "10s"
    healthy_deadline = "3m"
    auto_revert      = false
    canary           = 0
  }

  # A group is a set of tasks placed together on one node.
  group "cache" {
    # How many allocations of this group to run.
    count = 1

    # The group's network: ports are published on the node. "to" is the port
    # inside the task; without "static" the host port is picked from
    # 20000-32000.
    network {
      port "db" {
        to = 6379
      }
    }

    # What to do when a task exits: try again twice within 30 minutes, 15s
    # apart, then mark the allocation failed (and reschedule it).
    restart {
      attempts = 2
      interval = "30m"
      delay    = "15s"
      mode     = "fail"
    }

    ephemeral_disk {
      size = 300
    }

    # A task is the unit of work: a container, a command.
    task "redis" {
      driver = "docker"

      config {
        image          = "redis:7"
        ports          = ["db"]
        auth_soft_fail = true
      }

      # CPU in MHz and memory in MB reserved for the task.
      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
