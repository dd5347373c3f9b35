# Sourced by scripts written for the AWS sample "amazon-redshift-rsql-orchestration-framework":
#     source $1/get_redshift_creds.sh $2
# rsql-agent passes this directory as $1 and its secret id as $2 when a workflow or stage says
# "legacy_args": true. The sample's own file called the AWS CLI for every job; here the agent
# read the secret once at start and already put the connection in the job's environment, so
# this only gives it the sample's names. POSIX sh: no bashisms, it may be sourced by any shell.

HOST=${RSQL_HOST:-${PGHOST:-}}
PORT=${RSQL_PORT:-${PGPORT:-5439}}
USER=${RSQL_USER:-${PGUSER:-}}
DB=${RSQL_DB:-${PGDATABASE:-}}
PASSWORD=${RSPASSWORD:-${PGPASSWORD:-}}
RSPASSWORD=$PASSWORD
export RSPASSWORD

# Where the sample pointed the real client's ODBC configuration; kept when already set.
ODBCINI=${ODBCINI:-$HOME/.odbc.ini}
ODBCSYSINI=${ODBCSYSINI:-/opt/amazon/redshiftodbc/Setup}
AMAZONREDSHIFTODBCINI=${AMAZONREDSHIFTODBCINI:-/opt/amazon/redshiftodbc/lib/64/amazon.redshiftodbc.ini}
export ODBCINI ODBCSYSINI AMAZONREDSHIFTODBCINI
