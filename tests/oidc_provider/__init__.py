"""A real OpenID Connect provider for the single sign-on tests: a small Django project running
django-oauth-toolkit's OIDC provider in its own process on loopback (never part of Turnout)."""
