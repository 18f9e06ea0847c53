"""Services queue Celery tasks by name (``common.jobs.enqueue``), so that tasks import services and never the
reverse: every name written in the source must be a registered task once Django is set up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from celery import current_app

from common.jobs import enqueue

ROOT = Path(__file__).resolve().parent.parent


def _enqueued_names() -> list[tuple[str, str]]:
    found = []
    for package in ("common", "rollout", "cohorts", "audit"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "enqueue"
                        and node.args and isinstance(node.args[0], ast.Constant)):
                    found.append((f"{path.relative_to(ROOT)}:{node.lineno}", node.args[0].value))
    return found


def test_enqueue__every_name_in_the_source__is_a_registered_task() -> None:
    names = _enqueued_names()
    assert {name for _, name in names} >= {"rollout.tasks.deliver_webhook", "audit.tasks.run_audit_export",
                                           "audit.tasks.run_audit_verification"}
    assert [(where, name) for where, name in names if name not in current_app.tasks] == []


def test_enqueue__unknown_task_name__raises_at_once() -> None:
    with pytest.raises(KeyError, match=r"rollout\.tasks\.no_such_task"):
        enqueue("rollout.tasks.no_such_task")
