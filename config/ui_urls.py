"""The web UI's routes (the API lives under /api/v1/, see config/urls.py)."""

from django.urls import path

from audit import views as audit_views
from cohorts import views as cohort_views
from notifications import views as notification_views
from rollout import switcher, team_views
from rollout import views as rollout_views
from rollout.datamigration import views as migration_views
from rollout.feedback import views as feedback_views

# Names live under "ui:" (the management API names its routes flag-detail, cohort-list, ...).
app_name = "ui"

urlpatterns = [
    path("", rollout_views.dashboard, name="home"),
    path("environment/", switcher.switch_environment, name="switch-environment"),
    # Workloads and flags
    path("workloads/new/", rollout_views.workload_create, name="workload-create"),
    path("workloads/<str:key>/", rollout_views.workload_detail, name="workload-detail"),
    path("workloads/<str:key>/edit/", rollout_views.workload_update, name="workload-update"),
    path("flags/new/", rollout_views.flag_create, name="flag-create"),
    path("flags/<str:key>/", rollout_views.flag_detail, name="flag-detail"),
    path("flags/<str:key>/history/", audit_views.flag_history, name="flag-history"),
    path("flags/<str:key>/<str:env>/card/", rollout_views.state_card, name="state-card"),
    path("flags/<str:key>/<str:env>/kill/", rollout_views.state_kill, name="state-kill"),
    path("flags/<str:key>/<str:env>/resume/", rollout_views.state_resume, name="state-resume"),
    path("flags/<str:key>/<str:env>/retire/", rollout_views.state_retire, name="state-retire"),
    path("flags/<str:key>/<str:env>/percentage/", rollout_views.state_percentage, name="state-percentage"),
    path("flags/<str:key>/<str:env>/impact/", rollout_views.state_impact, name="state-impact"),
    path("flags/<str:key>/<str:env>/targeting/", rollout_views.state_targeting, name="state-targeting"),
    path("flags/<str:key>/<str:env>/plan/", rollout_views.state_plan, name="state-plan"),
    path("flags/<str:key>/<str:env>/plan/edit/", rollout_views.plan_editor, name="plan-editor"),
    path("flags/<str:key>/<str:env>/advance/", rollout_views.state_advance, name="state-advance"),
    path("flags/<str:key>/<str:env>/pause/", rollout_views.state_pause, name="state-pause"),
    path("flags/<str:key>/<str:env>/promote/", rollout_views.state_promote, name="state-promote"),
    path("flags/<str:key>/<str:env>/rollback/", rollout_views.state_rollback, name="state-rollback"),
    path("flags/<str:key>/<str:env>/rollback/undo/", rollout_views.state_undo_rollback, name="state-undo-rollback"),
    path("flags/<str:key>/<str:env>/guardrails/", rollout_views.state_guardrails, name="state-guardrails"),
    path("flags/<str:key>/<str:env>/readiness/", rollout_views.state_readiness, name="state-readiness"),
    # The migration stage card (docs/migrations.md)
    path("flags/<str:key>/<str:env>/migration/advance/", migration_views.migration_advance,
         name="migration-card-advance"),
    path("flags/<str:key>/<str:env>/migration/rollback/", migration_views.migration_rollback,
         name="migration-card-rollback"),
    path("flags/<str:key>/<str:env>/migration/resolve/", migration_views.migration_resolve,
         name="migration-card-resolve"),
    path("flags/<str:key>/<str:env>/feedback-rule/", feedback_views.feedback_rule, name="feedback-rule"),
    # Change requests (four eyes)
    path("changes/", rollout_views.change_list, name="change-list"),
    path("changes/<int:pk>/", rollout_views.change_detail, name="change-detail"),
    path("changes/<int:pk>/approve/", rollout_views.change_approve, name="change-approve"),
    path("changes/<int:pk>/reject/", rollout_views.change_reject, name="change-reject"),
    path("changes/<int:pk>/cancel/", rollout_views.change_cancel, name="change-cancel"),
    # Cohorts
    path("cohorts/", cohort_views.cohort_list, name="cohort-list"),
    path("cohorts/new/", cohort_views.cohort_create, name="cohort-create"),
    path("cohorts/validate-rules/", cohort_views.validate_rules, name="cohort-validate-rules"),
    path("cohorts/<str:key>/", cohort_views.cohort_detail, name="cohort-detail"),
    path("cohorts/<str:key>/edit/", cohort_views.cohort_update, name="cohort-update"),
    path("cohorts/<str:key>/members/", cohort_views.member_upload, name="cohort-members-upload"),
    path("cohorts/<str:key>/members/remove/", cohort_views.member_remove, name="cohort-members-remove"),
    path("cohorts/<str:key>/test/", cohort_views.test_subject, name="cohort-test"),
    # Audit
    path("audit/", audit_views.audit_log, name="audit-log"),
    path("audit/events/<int:sequence>/", audit_views.audit_event, name="audit-event"),
    path("audit/export/", audit_views.audit_export, name="audit-export-start"),
    path("audit/exports/<uuid:pk>/", audit_views.audit_export_progress, name="audit-export-progress"),
    path("audit/exports/<uuid:pk>/manifest.json", audit_views.audit_export_manifest, name="audit-export-manifest-file"),
    path("audit/verify/", audit_views.audit_verify, name="audit-verify-ui"),
    path("audit/public-key.json", audit_views.public_key_file, name="audit-public-key-file"),
    path("audit/verify_export.py", audit_views.offline_verifier, name="audit-offline-verifier"),
    path("audit/verifications/<uuid:pk>/", audit_views.audit_verification_progress,
         name="audit-verification-progress"),
    path("audit/history/<str:object_type>/<path:object_key>/", audit_views.object_history, name="audit-history"),
    # Keys
    path("keys/", rollout_views.keys, name="keys"),
    path("keys/sdk/", rollout_views.sdk_key_create, name="keys-sdk-create"),
    path("keys/sdk/<str:prefix>/revoke/", rollout_views.sdk_key_revoke, name="keys-sdk-revoke"),
    path("keys/tokens/", rollout_views.api_token_create, name="keys-token-create"),
    path("keys/tokens/<str:prefix>/revoke/", rollout_views.api_token_revoke, name="keys-token-revoke"),
    # The team: people, environments, break-glass reviews
    path("people/", team_views.people, name="people"),
    path("people/new/", team_views.person_create, name="person-create"),
    path("people/<str:username>/roles/", team_views.person_roles, name="person-roles"),
    path("people/<str:username>/deactivate/", team_views.person_deactivate, name="person-deactivate"),
    path("people/<str:username>/invite/", team_views.person_invite, name="person-invite"),
    # An invitation's one-time link: the invited person chooses their password (rollout/team_views.py).
    path("password/set/<uidb64>/<token>/", team_views.PasswordSetView.as_view(), name="password-set"),
    path("environments/", team_views.environments, name="environments"),
    path("environments/new/", team_views.environment_create, name="environment-create"),
    path("environments/<str:key>/edit/", team_views.environment_update, name="environment-update"),
    path("reviews/", team_views.reviews, name="reviews"),
    path("reviews/<int:pk>/acknowledge/", team_views.review_acknowledge, name="review-acknowledge"),
    path("stale-flags/", team_views.stale_flag_report, name="stale-flags"),
    path("stale-flags/<str:key>/archive/", team_views.flag_archive, name="stale-flag-archive"),
    path("stale-flags/<str:key>/restore/", team_views.flag_restore, name="stale-flag-restore"),
    # Notifications
    path("notifications/", notification_views.subscriptions, name="notifications"),
    path("notifications/new/", notification_views.subscription_create, name="subscription-create"),
    path("notifications/<int:pk>/edit/", notification_views.subscription_update, name="subscription-update"),
    path("notifications/<int:pk>/delete/", notification_views.subscription_delete, name="subscription-delete"),
    path("notifications/deliveries/", notification_views.deliveries, name="notification-deliveries"),
]
