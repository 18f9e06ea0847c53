from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, include, path
from django.utils.module_loading import import_string
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from common import views as common_views
from common.metrics import metrics_view

api_v1: list[URLPattern | URLResolver] = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file of its own: no inline script (CSP).
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
    path("", include("rollout.urls")),
    path("", include("cohorts.urls")),
    path("", include("audit.urls")),
]

urlpatterns = [
    path("", include("config.ui_urls")),
    path("login/", common_views.ThrottledLoginView.as_view(), name="login"),
    # With single sign-on, sign-out ends the provider's session too (rollout/access/oidc.py).
    path("logout/", import_string("rollout.access.oidc.TurnoutLogoutView").as_view() if settings.TURNOUT_SSO
         else auth_views.LogoutView.as_view(), name="logout"),
    path("metrics", metrics_view, name="metrics"),  # /healthz and /readyz: common.health
    # The admin signs in through the app's login (one form, one throttle); its own form is never served.
    path("admin/login/", common_views.admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("ofrep/v1/", include("rollout.delivery.ofrep_urls")),
]
if settings.TURNOUT_SSO:  # single sign-on: /oidc/authenticate/ and /oidc/callback/
    urlpatterns.append(path("oidc/", include("mozilla_django_oidc.urls")))
