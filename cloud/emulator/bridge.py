"""The activity bridge: patches to moto's Step Functions execution mode for the local emulator.

moto 5.2.5 (pinned: these patches reach into its internals) can execute state machines with the
LocalStack-derived interpreter in `moto/stepfunctions/parser/`, but activity tasks, the heart of
rsql-agent, do not work there out of the box. `apply()` closes each gap, in the emulator
process, before the server serves a request; each gap is one patch function in
`patches_interpreter.py` or `patches_api.py`, and has its test in tests/test_bridge.py (7 and 13
are modules of their own, tested in tests/test_emulator_autoscaling.py and
tests/test_agent_metrics.py):

1. GetActivityTask is not routed, and every execution gets an empty activity store, so an
   activity Task fails with "activity does not exist". Executions here get a store backed by the
   backend's activities, tasks wait in `ActivityHub` queues, GetActivityTask long-polls them.
2. A token whose task ended (timed out, completed, execution stopped or ended) must answer
   SendTaskHeartbeat/Success/Failure with `TaskTimedOut` (HTTP 400); moto answers 200 and does
   nothing, or HTTP 500 (its TaskTimedOut cannot even be constructed).
3. StopExecution must end the execution ABORTED at once, keeping error and cause; moto leaves it
   RUNNING until the running task times out, then marks it FAILED.
4. SendTaskFailure drops `cause`.
5. GetActivityTask must skip queued tasks whose token is closed or whose execution ended.
6. GetActivityTask on an unknown activity answers `ActivityDoesNotExist` (HTTP 400) at once, as
   AWS does; a poller must back off on it.
7. Auto Scaling termination lifecycle hooks never run: an instance is terminated at once,
   CompleteLifecycleAction answers HTTP 500, RecordLifecycleActionHeartbeat is not implemented.
   `autoscaling.py` runs them as AWS does and records every call.
8. The interpreter's service calls go to `localhost`: pinned to 127.0.0.1 (see below).
9. moto keeps every thread it starts in a list: pruned of finished threads at each execution.
10. StartExecution without a name names the execution "None"; AWS generates a UUID.
11. `$$.Execution.StartTime` is a Python datetime in the context object (a putItem using it
    fails: "not JSON serializable") and `$$.State.EnteredTime` reads
    `2026-11-27T08:01:02.123456+00:00`; AWS gives both as `2026-11-27T08:01:02.123Z`.
12. DynamoDB: a Query on an index the table lacks answers ResourceNotFoundException (as if the
    table were missing); AWS answers ValidationException.
13. PutLogEvents stores embedded metric format (EMF) lines without creating their metrics:
    `emf.py` extracts them into CloudWatch as AWS does (the agents' metrics).
14. EventBridge Scheduler takes any expression and time zone, and a schedule in a group that
    does not exist fails with HTTP 500; AWS answers ValidationException and
    ResourceNotFoundException. (moto never runs schedules: `cloud.emulator.scheduler` does.)
15. Auto Scaling PutScalingPolicy answers `PolicyArn`, which no SDK reads; AWS answers
    `PolicyARN`, the ARN an alarm's action names.
16. EC2 CreateLaunchTemplateVersion keeps UserData in a form a group cannot launch from (HTTP
    500 at the next launch); CreateLaunchTemplate's form is used for both.
17. A Map worker takes each next item by recursion: a Map of about 1,000 items per worker (a
    sequential stage of 1,000 jobs) dies of RecursionError and its execution hangs.
18. GetExecutionHistory answers every event at once, oldest first, ignoring maxResults,
    nextToken and reverseOrder, and copies all of them per call (seconds for 25,000 events).

AWS's limits, which moto does not enforce (`patches_limits.py`; tests in tests/test_limits.py):
a. An inline Map runs at most 40 iterations at once (MaxConcurrency 0 or above 40 included).
b. An execution's history holds at most 25,000 events: event 25,000 is ExecutionSucceeded, or
   ExecutionFailed with `States.Runtime`, "The execution reached the maximum number of history
   events (25000).", and the execution ends FAILED.
c. 262,144 bytes of JSON per state input (after Parameters) or output: States.DataLimitExceeded,
   which States.ALL does not catch; StartExecution refuses a larger input (ValidationException).

The `states:startExecution` integration (`patches_nested.py`; tests in tests/test_nested.py),
which runs a wide or long stage in child executions of the state machine itself:
d. Its parameters reach boto3 under ASL's names (every such Task fails with States.Runtime) and
   its answers are boto3's, not the optimized integration's (`ExecutionArn`, `Output`, ...).
e. A `.sync` Task that ends before its child (stopped, failed, or given up by its Map) leaves the
   child running; AWS stops it.

Findings about the interpreter, most kept as tests in tests/test_interpreter.py:
- Its own service integrations (dynamodb:getItem/putItem/updateItem with condition and update
  expressions, sns:publish) call the server over HTTP at `localhost:$MOTO_PORT`; the emulator
  sets MOTO_PORT, patch 8 pins the host to 127.0.0.1. A failed ConditionExpression reaches a
  Catch as `DynamoDB.ConditionalCheckFailedException`; a missing table as
  `DynamoDB.ResourceNotFoundException`; `States.TaskFailed` matches both in a Retry. getItem of
  a missing key returns `{}` (no `Item`), as AWS does.
- Work: Fail's ErrorPath/CausePath; States.StringToJson, States.MathAdd (nested too),
  States.Format (a null argument prints `null`) in Pass Parameters and Map ItemSelector;
  MaxConcurrencyPath (0 = unlimited); HeartbeatSecondsPath/TimeoutSecondsPath; Retry/Catch on
  custom error names; a failing Map iteration fails the Map at once.
- Trap: HeartbeatSeconds without TimeoutSeconds gets a hidden 60 s total timeout (AWS has
  none): always set TimeoutSeconds too.
- Trap: a task input that is a bare JSON string (a Map item "a.sh" with no Parameters) reaches
  the worker unquoted (`a.sh`, not `"a.sh"`): give activity Tasks object inputs.
- A stopped execution's history shows ActivityTimedOut (the woken task) before
  ExecutionAborted; its status and error/cause are AWS's.
"""

from __future__ import annotations

import os
from typing import Final

from cloud.emulator.hub import ActivityHub

MOTO_VERSION: Final = "5.2.5"
POLL_WAIT_ENV: Final = "RSQL_EMULATOR_POLL_WAIT_S"
# AWS holds an empty GetActivityTask open for 60 s.
DEFAULT_POLL_WAIT_S: Final = 60.0

_hub: ActivityHub | None = None


def apply(poll_wait_s: float | None = None) -> ActivityHub:
    """Patch moto (idempotent) and return the hub. Call before the server serves a request."""
    global _hub
    if _hub is not None:
        if poll_wait_s is not None:
            _hub.poll_wait_s = poll_wait_s
        return _hub
    import moto

    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"the activity bridge was written against moto {MOTO_VERSION}, found "
            f"{moto.__version__}: install moto[server]=={MOTO_VERSION}"
        )
    # After the version check: another moto may not even have the modules these patch.
    from cloud.emulator import autoscaling, emf
    from cloud.emulator import patches_api as api
    from cloud.emulator import patches_interpreter as interpreter
    from cloud.emulator import patches_limits as limits
    from cloud.emulator import patches_nested as nested

    if poll_wait_s is None:
        poll_wait_s = float(os.environ.get(POLL_WAIT_ENV, DEFAULT_POLL_WAIT_S))
    hub = ActivityHub(poll_wait_s)
    interpreter.executions_see_activities(hub)
    interpreter.schedule_activity_tasks(hub)
    interpreter.close_tokens_with_their_state(hub)
    interpreter.untaken_tasks_time_out()
    interpreter.replay_early_outcomes()
    interpreter.stopped_executions_stay_aborted(hub)
    interpreter.prune_finished_threads()
    interpreter.context_object_timestamps()
    interpreter.map_workers_loop()
    limits.inline_map_runs_at_most_40_iterations()
    limits.history_stops_at_25000_events(hub)
    limits.data_limit_is_terminal()
    limits.payload_limit_is_262144_bytes()
    limits.task_input_within_the_payload_limit()
    limits.execution_input_within_the_payload_limit()
    nested.start_execution_parameters_as_boto3_names_them()
    nested.start_execution_answers_as_aws_does()
    nested.abandoned_children_are_stopped()
    api.activity_tokens_answer_from_the_hub(hub)
    api.get_activity_task_long_polls_the_hub(hub)
    api.stop_execution_aborts_at_once(hub)
    api.send_task_failure_keeps_the_cause()
    api.unnamed_executions_get_a_uuid()
    api.pin_service_client_host()
    autoscaling.apply()
    api.query_on_a_missing_index_is_a_validation_error()
    emf.apply()
    api.scheduler_checks_what_aws_checks()
    api.put_scaling_policy_answers_its_arn()
    api.launch_template_versions_keep_user_data()
    api.execution_history_in_pages()
    _hub = hub
    return hub
