"""The SDK never raises into its host (issue 13): named regressions, then a fuzz over every
public call. Only exceptions raised by the host's own callables (``legacy=``/``parallel=``) may
escape ``run()``/``arun()``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakeserver import make_doc
from turnout import Path, Reason, Turnout

DOC = make_doc(3, **{"to-parallel": {"percentage": 100.0}, "cmp": {"percentage": 0.0, "compare_percentage": 100.0}})


# -- named regressions -----------------------------------------------------------------------


@pytest.mark.parametrize("flag", [["to-parallel"], {"flag": "to-parallel"}, {1, 2}])
def test_decide__unhashable_flag_key__legacy_error_not_type_error(flag: Any) -> None:
    client = Turnout.offline(DOC)
    d = client.decide(flag, "user-1")
    assert (d.path, d.reason) == (Path.LEGACY, Reason.ERROR)
    client.close()


@pytest.mark.parametrize("flag", [["to-parallel"], {"flag": "to-parallel"}])
def test_run__unhashable_flag_key__runs_legacy_not_type_error(flag: Any) -> None:
    client = Turnout.offline(DOC)
    assert client.run(flag, "user-1", legacy=lambda: "old", parallel=lambda: "new") == "old"
    client.close()


@pytest.mark.parametrize("flag", [["to-parallel"], {"flag": "to-parallel"}])
def test_arun__unhashable_flag_key__runs_legacy_not_type_error(flag: Any) -> None:
    client = Turnout.offline(DOC)

    async def old() -> str:
        return "old"

    async def new() -> str:
        return "new"

    assert asyncio.run(client.arun(flag, "user-1", legacy=old, parallel=new)) == "old"
    client.close()
