"""Rollout's API routes, included under /api/v1/ by config/urls.py."""

from django.urls import path

from rollout.api import change_requests as cr_api
from rollout.api import config as config_api
from rollout.api import environments, flags, keys, promotion, users, workloads
from rollout.api import rollouts as rollouts_api
from rollout.api import stale as stale_api
from rollout.datamigration import api as migration_api
from rollout.delivery import members_api, sdk_api
from rollout.delivery import stream as stream_api
from rollout.feedback import api as feedback_api

STATE = "flags/<str:key>/states/<str:env>/"

urlpatterns = [
    path("sdk/ruleset", sdk_api.ruleset, name="sdk-ruleset"),
    path("sdk/evaluate", sdk_api.evaluate, name="sdk-evaluate"),
    path("sdk/evaluate/bulk", sdk_api.evaluate_bulk, name="sdk-evaluate-bulk"),
    path("sdk/stream", stream_api.stream, name="sdk-stream"),
    path("sdk/metrics", sdk_api.metrics, name="sdk-metrics"),
    path("sdk/feedback", feedback_api.sdk_feedback, name="sdk-feedback"),
    path("sdk/cohorts/<str:key>/members", members_api.cohort_members, name="sdk-cohort-members"),
    path("environments/", environments.EnvironmentListView.as_view(), name="environment-list"),
    path("environments/<str:key>/", environments.EnvironmentDetailView.as_view(), name="environment-detail"),
    path("workloads/", workloads.WorkloadListView.as_view(), name="workload-list"),
    path("workloads/<str:key>/", workloads.WorkloadDetailView.as_view(), name="workload-detail"),
    path("flags/", flags.FlagListView.as_view(), name="flag-list"),
    path("flags/<str:key>/", flags.FlagDetailView.as_view(), name="flag-detail"),
    path("flags/<str:key>/states/", flags.FlagStateListView.as_view(), name="flag-state-list"),
    path("flags/<str:key>/archive/", stale_api.FlagArchiveView.as_view(), name="flag-archive"),
    path("flags/<str:key>/restore/", stale_api.FlagRestoreView.as_view(), name="flag-restore"),
    path("stale-flags/", stale_api.StaleFlagListView.as_view(), name="stale-flags"),
    path(STATE, flags.FlagStateDetailView.as_view(), name="flag-state-detail"),
    path(STATE + "kill/", flags.FlagStateKillView.as_view(), name="flag-state-kill"),
    path(STATE + "resume/", flags.FlagStateResumeView.as_view(), name="flag-state-resume"),
    path(STATE + "retire/", flags.FlagStateRetireView.as_view(), name="flag-state-retire"),
    # Configuration as code (docs/config-as-code.md).
    path("config/schema", config_api.ConfigSchemaView.as_view(), name="config-schema"),
    path("config/export", config_api.ConfigExportView.as_view(), name="config-export"),
    path("config/plan", config_api.ConfigPlanView.as_view(), name="config-plan"),
    path("config/apply", config_api.ConfigApplyView.as_view(), name="config-apply"),
    path("sdk-keys/", keys.SdkKeyListView.as_view(), name="sdk-key-list"),
    path("sdk-keys/<str:prefix>/", keys.SdkKeyDetailView.as_view(), name="sdk-key-detail"),
    path("sdk-keys/<str:prefix>/revoke/", keys.SdkKeyRevokeView.as_view(), name="sdk-key-revoke"),
    path("tokens/", keys.ApiTokenListView.as_view(), name="api-token-list"),
    path("tokens/<str:prefix>/", keys.ApiTokenDetailView.as_view(), name="api-token-detail"),
    path("tokens/<str:prefix>/revoke/", keys.ApiTokenRevokeView.as_view(), name="api-token-revoke"),
    path("users/", users.UserListView.as_view(), name="user-list"),
    path("users/<str:username>/", users.UserDetailView.as_view(), name="user-detail"),
    path("users/<str:username>/deactivate/", users.UserDeactivateView.as_view(), name="user-deactivate"),
    path("users/<str:username>/invite/", users.UserInviteView.as_view(), name="user-invite"),
    # Rollouts: plans, actions, guardrails, readiness, mismatch evidence.
    path(STATE + "stages/", rollouts_api.StagesView.as_view(), name="rollout-stages"),
    path(STATE + "advance/", rollouts_api.AdvanceView.as_view(), name="rollout-advance"),
    path(STATE + "pause/", rollouts_api.PauseView.as_view(), name="rollout-pause"),
    path(STATE + "promote/", promotion.PromoteView.as_view(), name="rollout-promote"),
    path(STATE + "rollback/", rollouts_api.RollbackView.as_view(), name="rollout-rollback"),
    path(STATE + "guardrails/", rollouts_api.GuardrailsView.as_view(), name="rollout-guardrails"),
    path(STATE + "readiness/", rollouts_api.ReadinessView.as_view(), name="rollout-readiness"),
    path(STATE + "mismatches/", rollouts_api.MismatchesView.as_view(), name="rollout-mismatches"),
    path(STATE + "mismatches/<str:group>/known/", rollouts_api.MismatchKnownView.as_view(),
         name="rollout-mismatch-known"),
    # User feedback as readiness evidence (docs/feedback.md).
    path(STATE + "feedback/", feedback_api.FeedbackView.as_view(), name="rollout-feedback"),
    path(STATE + "feedback/rule/", feedback_api.FeedbackRuleView.as_view(), name="rollout-feedback-rule"),
    path("gates/<str:flag>/<str:env>", rollouts_api.GateView.as_view(), name="deployment-gate"),
    # Data migrations: stages, rollback, the divergence list (docs/migrations.md).
    path(STATE + "migration/", migration_api.MigrationView.as_view(), name="migration"),
    path(STATE + "migration/rollback/", migration_api.MigrationRollbackView.as_view(), name="migration-rollback"),
    path(STATE + "migration/divergences/", migration_api.DivergenceListView.as_view(), name="migration-divergences"),
    path(STATE + "migration/divergences/export", migration_api.DivergenceExportView.as_view(),
         name="migration-divergences-export"),
    path(STATE + "migration/divergences/resolve/", migration_api.DivergenceResolveView.as_view(),
         name="migration-divergences-resolve"),
    # Four eyes.
    path("change-requests/", cr_api.ChangeRequestListView.as_view(), name="change-requests"),
    path("change-requests/<str:pk>/", cr_api.ChangeRequestDetailView.as_view(), name="change-request"),
    path("change-requests/<str:pk>/approve/", cr_api.ApproveView.as_view(), name="change-request-approve"),
    path("change-requests/<str:pk>/reject/", cr_api.RejectView.as_view(), name="change-request-reject"),
    path("change-requests/<str:pk>/cancel/", cr_api.CancelView.as_view(), name="change-request-cancel"),
    path("review-items/", cr_api.ReviewItemListView.as_view(), name="review-items"),
    path("review-items/<str:pk>/acknowledge/", cr_api.AcknowledgeView.as_view(), name="review-item-acknowledge"),
]
