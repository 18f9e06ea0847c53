"""User feedback as readiness evidence (docs/feedback.md).

Subjects tell how a service felt through the SDK (``client.feedback``) or ``POST /api/v1/sdk/feedback``;
each entry is stored with the path the subject was on. The readiness report aggregates it per path
(``reads.feedback_report``) and an optional rule per flag state (``FeedbackRule``, set through the action
layer as ``flag_state.feedback_rule_set``) holds a rollout back when parallel's average score falls
behind legacy's. Storing feedback is telemetry (no audit event); setting the rule is a change (audited).
"""
