"""Set the provider up from a test: ``python -m tests.oidc_provider.admin_cli <command> ...``.

  app CLIENT_ID SECRET REDIRECT_URI POST_LOGOUT_URI
                                       register Turnout as a confidential client (RS256, no consent screen)
  user USERNAME PASSWORD EMAIL GROUPS  create a person (GROUPS comma-separated)
  groups USERNAME GROUPS               replace a person's groups
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oidc_provider.settings")
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from oauth2_provider.models import Application

    command, *args = argv
    if command == "app":
        client_id, secret, redirect, post_logout = args
        Application.objects.create(name="Turnout", client_id=client_id, client_secret=secret,
                                   client_type=Application.CLIENT_CONFIDENTIAL,
                                   authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
                                   redirect_uris=redirect, post_logout_redirect_uris=post_logout,
                                   skip_authorization=True,
                                   algorithm=Application.RS256_ALGORITHM)
    elif command == "user":
        username, password, email, groups = args
        user = User.objects.create_user(username=username, password=password, email=email)
        user.groups.set([Group.objects.get_or_create(name=g)[0] for g in groups.split(",") if g])
    elif command == "groups":
        username, groups = args
        User.objects.get(username=username).groups.set(
            [Group.objects.get_or_create(name=g)[0] for g in groups.split(",") if g])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
