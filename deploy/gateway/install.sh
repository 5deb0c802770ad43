#!/usr/bin/env bash
# Install an anju community gateway on a Raspberry Pi (Debian / Raspberry Pi OS, as root):
# Mosquitto as the devices' LAN broker (bound to the LAN address only, TLS on offer), anju in a
# virtual environment, the gateway's certificates and credentials from `anju provision`, and
# the systemd unit. Safe to run again (upgrades anju, keeps an edited gateway.yaml).
#
#   sudo deploy/gateway/install.sh --gateway gw-jx-nh-0001-a --city ./city \
#        --lan-address 192.168.10.1 --backend-url mqtts://broker.example.org:8883
#
# --city is the `anju provision` folder, or a copy holding only this gateway's files:
#   tar -C city -czf gw.tgz ca.crt lan/GW clients/GW.crt clients/GW.key gateways/GW.yaml
# Environment: ANJU_SPEC (pip requirement, default "anju[modbus]==0.1.0"; a wheel path works;
#   "none": leave anju as it is), ANJU_ROOT (install under this prefix instead of /: tests and
#   image builds; no apt, no systemctl), ANJU_PYTHON (the Python with PyYAML that writes
#   gateway.yaml; default the venv's).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
gw="" city="" lan="" backend=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gateway) gw="$2"; shift 2 ;;
    --city) city="$2"; shift 2 ;;
    --lan-address) lan="$2"; shift 2 ;;
    --backend-url) backend="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$gw" ] || [ -z "$city" ] || [ -z "$lan" ] || [ -z "$backend" ]; then
  echo "install.sh: --gateway, --city, --lan-address and --backend-url are required" >&2
  exit 2
fi
case "$lan" in
  0.0.0.0|::|"") echo "install.sh: --lan-address must be the LAN interface's address, not $lan" >&2; exit 2 ;;
esac
case "$backend" in
  mqtts://*) ;;
  *) echo "install.sh: --backend-url must be mqtts://host:port (the uplink crosses 4G)" >&2; exit 2 ;;
esac
for f in ca.crt "lan/$gw/passwd" "lan/$gw/acl" "lan/$gw/server.crt" "lan/$gw/server.key" \
         "clients/$gw.crt" "clients/$gw.key" "gateways/$gw.yaml"; do
  [ -f "$city/$f" ] || { echo "install.sh: $city/$f is missing (run anju provision)" >&2; exit 1; }
done
root="${ANJU_ROOT:-}"
spec="${ANJU_SPEC:-anju[modbus]==0.1.0}"
own() { if [ -z "$root" ]; then chown "$@"; fi; }

if [ -z "$root" ]; then
  [ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto python3-venv
  id anju >/dev/null 2>&1 || useradd --system --home-dir /var/lib/anju --shell /usr/sbin/nologin anju
fi

# anju itself, in its own virtual environment (the core: no backend dependencies).
if [ "$spec" != none ]; then
  python3 -m venv "$root/opt/anju/venv"
  "$root/opt/anju/venv/bin/pip" install --quiet --upgrade "$spec"
fi
py="${ANJU_PYTHON:-$root/opt/anju/venv/bin/python}"

# The gateway's certificates: CA for the uplink, client certificate for mutual TLS.
install -d -m 0775 "$root/etc/anju"
own root:anju "$root/etc/anju"
install -m 0644 "$city/ca.crt" "$root/etc/anju/ca.crt"
install -m 0644 "$city/clients/$gw.crt" "$root/etc/anju/$gw.crt"
install -m 0640 "$city/clients/$gw.key" "$root/etc/anju/$gw.key"
own root:anju "$root/etc/anju/$gw.key"

# The LAN broker: hashed passwords, ACL (devices publish only as themselves), TLS files.
install -d -m 0755 "$root/etc/mosquitto/anju"
for f in acl ca.crt server.crt; do install -m 0644 "$city/lan/$gw/$f" "$root/etc/mosquitto/anju/$f"; done
for f in passwd server.key; do
  install -m 0640 "$city/lan/$gw/$f" "$root/etc/mosquitto/anju/$f"
  own root:mosquitto "$root/etc/mosquitto/anju/$f"
done
conf="$root/etc/mosquitto/mosquitto.conf"
if [ -f "$conf" ] && ! grep -q "anju" "$conf"; then cp "$conf" "$conf.before-anju"; fi
sed "s/LAN_ADDRESS/$lan/g" "$here/mosquitto/lan.conf" > "$conf.tmp" && mv "$conf.tmp" "$conf"

# gateway.yaml: made once from the example with this gateway's credentials; kept afterwards.
cfg="$root/etc/anju/gateway.yaml"
if [ ! -f "$cfg" ]; then
  ANJU_EXAMPLE="$here/gateway.example.yaml" ANJU_CREDS="$city/gateways/$gw.yaml" \
  ANJU_BACKEND="$backend" ANJU_CFG="$cfg" ANJU_ETC="/etc/anju" ANJU_GW="$gw" \
  "$py" - <<'PY'
import os, yaml
cfg = yaml.safe_load(open(os.environ["ANJU_EXAMPLE"], encoding="utf-8"))
creds = yaml.safe_load(open(os.environ["ANJU_CREDS"], encoding="utf-8"))
etc, gw = os.environ["ANJU_ETC"], os.environ["ANJU_GW"]
cfg["gateway_id"] = creds["gateway_id"]
cfg["lan"].update(url="mqtt://127.0.0.1:1883", **creds["lan"])
cfg["uplink"].update(creds["uplink"], url=os.environ["ANJU_BACKEND"], ca_file=f"{etc}/ca.crt",
                     cert_file=f"{etc}/{gw}.crt", key_file=f"{etc}/{gw}.key")
fd = os.open(os.environ["ANJU_CFG"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
with os.fdopen(fd, "w", encoding="utf-8") as f:
    f.write("# Made by deploy/gateway/install.sh from gateway.example.yaml: set `devices`.\n")
    yaml.safe_dump(cfg, f, sort_keys=False, allow_unicode=True)
PY
  own root:anju "$cfg"
  echo "install.sh: wrote $cfg: list this gateway's devices under 'devices:' (docs/gateway.md)"
fi

install -d -m 0755 "$root/etc/systemd/system"
install -m 0644 "$here/systemd/anju-gateway.service" "$root/etc/systemd/system/anju-gateway.service"
if [ -z "$root" ]; then
  systemctl daemon-reload
  systemctl enable --now mosquitto
  systemctl restart mosquitto
  systemctl enable --now anju-gateway
  /opt/anju/venv/bin/anju gateway status --config /etc/anju/gateway.yaml || true
fi
echo "install.sh: $gw installed (LAN broker on $lan:1883 and TLS $lan:8883; uplink $backend)"
