#!/usr/bin/env bash
# Start the public face of the SuperLink: nginx, terminating TLS on PUBLIC_HOST:PUBLIC_PORT and
# passing on only the Fleet API routes SuperNodes use, in the foreground.
#
#   CERTS_DIR=deploy/certs deploy/start_proxy.sh
#
# Flower 1.41 serves the Fleet, Control and Runtime APIs as HTTPS routes on one port
# (/v1/fleet/*, /v1/control/*, /v1/runtime/*). The Control API registers SuperNode keys, starts
# and lists runs, and has no authentication of its own without Flower's enterprise account
# plugin, so the SuperLink listens on loopback only (start_superlink.sh) and this proxy is the
# only thing other organisations can reach. It allows exactly the ten Fleet routes a SuperNode
# with a registered key calls (flwr/supernode/fleet_http_client.py); everything else, including
# /v1/fleet/register-node (self-registration), /docs and /openapi.json, gets 403.
#
# Environment: CERTS_DIR (server.pem, server.key, ca.crt from gen_certs.sh; required),
# PUBLIC_HOST (default 127.0.0.1; the machine's address or 0.0.0.0 to accept other
# organisations), PUBLIC_PORT (default 9092), SUPERLINK_PORT (the loopback SuperLink, default
# 9093), PROXY_DIR (nginx's config, logs and pid; default a new temporary directory),
# PROXY_MAX_BODY (largest request body, default 1g: push-object carries adapter chunks).
set -euo pipefail
source "$(dirname "$0")/env.sh"

certs="$(realpath "${CERTS_DIR:?set CERTS_DIR to the directory written by gen_certs.sh}")"
nginx_bin="$(command -v nginx || true)"
[ -n "$nginx_bin" ] || nginx_bin=/usr/sbin/nginx
[ -x "$nginx_bin" ] || { echo "[start_proxy] nginx not found: apt-get install nginx-light (scripts/setup.sh does)" >&2; exit 2; }
dir="${PROXY_DIR:-$(mktemp -d -t fedcolora-proxy.XXXXXX)}"
mkdir -p "$dir/logs" "$dir/tmp"
chmod 755 "$dir" "$dir/tmp"

# Exactly the Fleet routes of an authenticated SuperNode. Not register-node/unregister-node:
# with SuperNode authentication the operator registers keys through the Control API.
fleet_routes="activate-node|deactivate-node|send-node-heartbeat|pull-messages|push-messages|get-run|get-fab|push-object|pull-object|confirm-message-received"
# nginx's workers drop root to nobody; they only stream (no buffering to disk below).
user_line=""
[ "$(id -u)" = 0 ] && user_line="user nobody nogroup;"

cat > "$dir/nginx.conf" <<NGINX
# Written by deploy/start_proxy.sh; regenerated at every start.
$user_line
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log $dir/logs/access.log;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  server_tokens off;

  upstream flower_superlink { server 127.0.0.1:$SUPERLINK_PORT; }

  server {
    listen $PUBLIC_HOST:$PUBLIC_PORT ssl;
    ssl_certificate $certs/server.pem;
    ssl_certificate_key $certs/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size ${PROXY_MAX_BODY:-1g};

    # Matched against the normalised path (dot segments and %-escapes resolved), and that
    # normalised path (\$uri) is what goes upstream: no raw-path trick reaches another route.
    location ~ ^/v1/fleet/($fleet_routes)\$ {
      limit_except POST { deny all; }
      proxy_pass https://flower_superlink\$uri;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $certs/ca.crt;
      proxy_ssl_name localhost;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
    }
    location / {
      default_type text/plain;
      return 403 "only the Flower Fleet API is served here\n";
    }
  }
}
NGINX

"$nginx_bin" -t -q -e "$dir/logs/error.log" -p "$dir" -c "$dir/nginx.conf"
echo "[start_proxy] nginx on https://$PUBLIC_HOST:$PUBLIC_PORT -> Fleet API of" \
  "https://127.0.0.1:$SUPERLINK_PORT (config $dir/nginx.conf)"
exec "$nginx_bin" -e "$dir/logs/error.log" -p "$dir" -c "$dir/nginx.conf" -g "daemon off;"
