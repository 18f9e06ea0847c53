"""The rollouts fixtures (people with roles, cohorts, a planned flag) for the feedback tests."""

from tests.rollouts.conftest import cohorts, people, planned  # noqa: F401
