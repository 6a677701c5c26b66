# A server node (it also runs tasks: drop the client block on a dedicated
# server). Written by `berth install --server`; edit freely, install never
# overwrites it.
data_dir  = "/var/lib/berth"
bind_addr = "0.0.0.0"

server {
  enabled          = true
  bootstrap_expect = 1
}

client {
  enabled = true
}
