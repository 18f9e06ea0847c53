"""Every audit event's action name, in one enum (a ``StrEnum``: the stored value is the string).

A change made through the action layer (``actions.registry``) is named by the event it writes, so the
name a caller submits, the name policy decides on and the name in the audit log are one name.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    # workloads, flags, cohorts, environments
    WORKLOAD_CREATED = "workload.created"
    WORKLOAD_UPDATED = "workload.updated"
    WORKLOAD_DELETED = "workload.deleted"
    FLAG_CREATED = "flag.created"
    FLAG_UPDATED = "flag.updated"
    FLAG_DELETED = "flag.deleted"
    FLAG_ARCHIVED = "flag.archived"
    FLAG_RESTORED = "flag.restored"
    FLAGS_STALE_DETECTED = "flags.stale_detected"  # the stale-flag report found newly stale flags
    COHORT_CREATED = "cohort.created"
    COHORT_UPDATED = "cohort.updated"
    COHORT_DELETED = "cohort.deleted"
    COHORT_MEMBERS_ADDED = "cohort.members_added"
    COHORT_MEMBERS_REMOVED = "cohort.members_removed"
    COHORT_MEMBERS_CHANGED = "cohort.members_changed"
    ENVIRONMENT_CREATED = "environment.created"
    ENVIRONMENT_UPDATED = "environment.updated"
    # a flag's rollout in one environment
    FLAG_STATE_UPDATED = "flag_state.updated"
    FLAG_STATE_KILLED = "flag_state.killed"
    FLAG_STATE_RESUMED = "flag_state.resumed"
    FLAG_STATE_UNPAUSED = "flag_state.unpaused"
    FLAG_STATE_RETIRED = "flag_state.retired"
    FLAG_STATE_PLAN_SET = "flag_state.plan_set"
    FLAG_STATE_ADVANCED = "flag_state.advanced"
    FLAG_STATE_ROLLED_BACK = "flag_state.rolled_back"
    FLAG_STATE_PAUSED = "flag_state.paused"
    FLAG_STATE_GUARDRAILS_SET = "flag_state.guardrails_set"
    FLAG_STATE_GUARDRAIL_QUERIES_SET = "flag_state.guardrail_queries_set"  # Prometheus guardrail queries
    FLAG_STATE_PROMOTED = "flag_state.promoted"  # plan, guardrails and targeting copied from another environment
    FLAG_STATE_CONFIGURED = "flag_state.configured"  # several changes of one flag state as one change request
    FLAG_STATE_FEEDBACK_RULE_SET = "flag_state.feedback_rule_set"  # the user-feedback readiness rule
    MISMATCH_GROUP_KNOWN = "mismatch_group.known"
    MISMATCH_GROUP_UNKNOWN = "mismatch_group.unknown"
    COHORT_RULES_NEUTRALISED = "cohort.rules_neutralised"  # by migration cohorts/0002 only
    # data migrations (migration flags)
    MIGRATION_STAGE_SET = "migration.stage_set"
    MIGRATION_ROLLED_BACK = "migration.rolled_back"
    MIGRATION_DIVERGENCES_RESOLVED = "migration.divergences_resolved"
    MIGRATION_DIVERGENCES_DETECTED = "migration.divergences_detected"  # new ones, told to subscribers
    # access
    SDK_KEY_CREATED = "sdk_key.created"
    SDK_KEY_REVOKED = "sdk_key.revoked"
    API_TOKEN_CREATED = "api_token.created"
    API_TOKEN_REVOKED = "api_token.revoked"
    USER_CREATED = "user.created"
    USER_ROLES_CHANGED = "user.roles_changed"
    USER_DEACTIVATED = "user.deactivated"
    USER_INVITED = "user.invited"  # an e-mail with a set-password (or single sign-on) link
    USER_PASSWORD_SET = "user.password_set"  # by the person, through the invitation's one-time link
    # four eyes
    CHANGE_REQUEST_CREATED = "change_request.created"
    CHANGE_REQUEST_APPROVED = "change_request.approved"
    CHANGE_REQUEST_REJECTED = "change_request.rejected"
    CHANGE_REQUEST_CANCELLED = "change_request.cancelled"
    CHANGE_REQUEST_STALE = "change_request.stale"
    REVIEW_ITEM_ACKNOWLEDGED = "review_item.acknowledged"
    # notifications (a person's own subscriptions)
    NOTIFICATION_SUBSCRIBED = "notification.subscribed"
    NOTIFICATION_SUBSCRIPTION_CHANGED = "notification.subscription_changed"
    NOTIFICATION_UNSUBSCRIBED = "notification.unsubscribed"
    # the audit log itself and sign-in
    AUDIT_EXPORTED = "audit.exported"
    AUDIT_EVIDENCE_EXPORTED = "audit.evidence_exported"
    AUDIT_VERIFICATION_STARTED = "audit.verification_started"
    AUDIT_VERIFIED = "audit.verified"
    AUDIT_VERIFICATION_FAILED = "audit.verification_failed"
    AUTH_LOGIN = "auth.login"
    AUTH_LOGIN_FAILED = "auth.login_failed"
    AUTH_LOGIN_FAILED_BURST = "auth.login_failed_burst"
    AUTH_LOGOUT = "auth.logout"
