source $1/get_redshift_creds.sh $2
rsql -h $HOST -U $USER -d $DB << EOF

\echo ' ------------------------------- '
\echo Start Time - $(date +"%T.%N")
\echo 'rsql_blog_script_4.sh job started'

begin ;

/* SET QUERY Group */
SET query_group to 'rsql_blog_querygroup';

\echo '----Inserting data into blog table----'

INSERT INTO "rsql_blog"."blog_table" VALUES
(
	2,
    'rsql_blog_script_4.sh',
	GETDATE()
);

\if :ERROR <> 0
 \echo 'Insert Statement Failed with Below Details'
 \echo 'Error Code -'
 \echo :ERRORCODE
 \remark :LAST_ERROR_MESSAGE
 \exit 21
\else
 \echo :ACTIVITYCOUNT
 \remark '**** Statement Executed Successfully ****'
\endif

commit ;

\echo '********** JOB COMPLETED SUCCESSFULLY ***********'
\exit 0

EOF

rsqlexitcode=$?
echo Completion Time - $(date +"%T.%N")
echo "rsql_blog_script_4.sh job exited with error code $rsqlexitcode"
exit $rsqlexitcode
