#!/bin/sh
# Stands in for `postern serve -c CFG` in bench/smtp: haproxy in TCP mode
# on the same listen address, relaying to the same backend with a PROXY v2
# header (exec: the bench measures this PID).
cfg=$3
listen=$(sed -n 's/^ *listen: "\(.*\)"/\1/p' "$cfg" | head -1)
backend=$(sed -n 's/^ *backend: "\(.*\)"/\1/p' "$cfg" | head -1)
cat > "$cfg.haproxy" <<EOT
global
  maxconn 9000
defaults
  mode tcp
  timeout connect 10s
  timeout client 5m
  timeout server 5m
frontend smtp
  bind $listen
  default_backend pf
backend pf
  server pf $backend send-proxy-v2
EOT
exec haproxy -db -f "$cfg.haproxy"
