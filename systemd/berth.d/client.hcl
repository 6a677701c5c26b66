# A client node. Written by `berth install --client --servers ADDR,...`;
# edit freely, install never overwrites it.
data_dir  = "/var/lib/berth"
bind_addr = "0.0.0.0"

client {
  enabled = true
  servers = ["192.168.1.10:4647"]
}
