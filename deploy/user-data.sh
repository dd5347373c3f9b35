#!/usr/bin/env bash
# EC2 user data for a launch template of the rsql-agent Auto Scaling group.
# Fill in the four values below (or template them from your IaC), attach an instance profile
# with the policy that `rsql-cloud iam agent-policy` prints, and every instance that boots
# starts polling the stack's activity.
set -euo pipefail
RSQL_AGENT_WHEEL_URL_OR_PATH="/opt/rsql-agent-dist/rsql_agent-0.1.0-py3-none-any.whl"
ACTIVITY_ARN="arn:aws:states:us-east-1:123456789012:activity:rsql-jobs"
SECRET_ID="rsql/redshift"
SCRIPTS_DIR="/opt/rsql-agent-dist/rsql_scripts"

dnf install -y python3.11 python3.11-pip git 2>/dev/null || apt-get install -y python3 python3-venv
mkdir -p /etc/rsql-agent
cat > /etc/rsql-agent/agent.env <<ENV
RSQL_AGENT_ACTIVITY_ARN=${ACTIVITY_ARN}
RSQL_AGENT_SECRET_ID=${SECRET_ID}
RSQL_AGENT_SCRIPT_DIR=/opt/rsql-agent/scripts
RSQL_AGENT_LOG_DIR=/var/log/rsql-agent
RSQL_AGENT_STATE_DIR=/var/lib/rsql-agent
AWS_REGION=$(cloud-init query region 2>/dev/null || echo us-east-1)
ENV
/opt/rsql-agent-dist/deploy/install.sh --source "$RSQL_AGENT_WHEEL_URL_OR_PATH" --scripts "$SCRIPTS_DIR"
