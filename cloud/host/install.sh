#!/usr/bin/env bash
# Install or upgrade rsql-agent on an EC2 host (Amazon Linux 2023, RHEL, Debian, Ubuntu).
# Idempotent: run it again to upgrade; it keeps an existing /etc/rsql-agent/agent.env unless --env.
#
#   sudo deploy/install.sh [--source DIR_OR_WHEEL] [--scripts DIR] [--env FILE] [--no-start]
#
# --source   what to pip-install (default: this checkout)
# --scripts  a directory of RSQL scripts to copy into /opt/rsql-agent/scripts
# --env      the settings to install as /etc/rsql-agent/agent.env (replacing it)
# --no-start install and enable, but do not (re)start the service
#
# example:
#   sudo deploy/install.sh --source dist/rsql_agent-0.1.0-py3-none-any.whl --scripts rsql_scripts
set -euo pipefail

PREFIX=/opt/rsql-agent
ETC=/etc/rsql-agent
UNIT=/etc/systemd/system/rsql-agent.service
HERE="$(cd "$(dirname "$0")/.." && pwd)"
SOURCE="$HERE"
SCRIPTS=""
ENV_FILE=""
START=1

while [ $# -gt 0 ]; do
    case "$1" in
        --source) SOURCE="$2"; shift 2 ;;
        --scripts) SCRIPTS="$2"; shift 2 ;;
        --env) ENV_FILE="$2"; shift 2 ;;
        --no-start) START=0; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }
PY="$(command -v python3.13 || command -v python3.12 || command -v python3.11 || command -v python3)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "install.sh: Python 3.11+ is required, found $("$PY" --version)" >&2; exit 1; }

echo "== user and directories"
id rsql-agent >/dev/null 2>&1 || useradd --system --home-dir "$PREFIX" --shell /sbin/nologin rsql-agent
install -d -m 0755 "$PREFIX" "$PREFIX/scripts"
install -d -m 0750 -o root -g rsql-agent "$ETC"

echo "== python environment in $PREFIX/venv"
[ -x "$PREFIX/venv/bin/python" ] || "$PY" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/venv/bin/pip" install --quiet --upgrade "$SOURCE"
install -m 0644 "$HERE/README.md" "$PREFIX/README.md" 2>/dev/null || true

if [ -n "$SCRIPTS" ]; then
    echo "== scripts from $SCRIPTS"
    # Scripts are owned by root and only readable by the agent: a job cannot rewrite its peers.
    cp -R "$SCRIPTS"/. "$PREFIX/scripts/"
    chown -R root:rsql-agent "$PREFIX/scripts"
    chmod -R u=rwX,g=rX,o= "$PREFIX/scripts"
fi

echo "== settings"
if [ -n "$ENV_FILE" ]; then
    install -m 0640 -o root -g rsql-agent "$ENV_FILE" "$ETC/agent.env"
    echo "   wrote $ETC/agent.env from $ENV_FILE"
elif [ ! -f "$ETC/agent.env" ]; then
    install -m 0640 -o root -g rsql-agent "$HERE/systemd/agent.env.example" "$ETC/agent.env"
    echo "   wrote $ETC/agent.env from the example: set RSQL_AGENT_ACTIVITY_ARN and RSQL_AGENT_SECRET_ID"
else
    echo "   kept existing $ETC/agent.env"
fi

echo "== systemd unit"
install -m 0644 "$HERE/systemd/rsql-agent.service" "$UNIT"
systemctl daemon-reload
systemctl enable rsql-agent.service >/dev/null
if [ "$START" -eq 1 ]; then
    systemctl restart rsql-agent.service
    systemctl --no-pager --lines=5 status rsql-agent.service || true
fi
echo "== done: journalctl -u rsql-agent -f follows the agent"
