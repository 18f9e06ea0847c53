"""One adapter per SDK; ``python adapters.py NAME`` prints that SDK's results as JSON.

Every adapter loads the same 1,000 flags (workload.py) into the SDK's offline form, builds
each SDK's context objects for the 100,000 subjects *before* timing, and exposes one call per
scenario that is exactly what a host would call per decision. The runner (run.py) starts each
adapter in its own interpreter so that no SDK's imports or caches affect another's numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import tempfile
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workload as w

Scenario = tuple[Callable[[str, Any], Any], list[tuple[str, Any]], Callable[[Any], bool]]


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


# -- turnout ---------------------------------------------------------------------------------


def turnout_doc() -> dict[str, Any]:
    flags: dict[str, Any] = {
        name: {"enabled": True, "salt": name, "percentage": w.PERCENTAGE, "stage": 1} for name in w.FILLER
    }
    flags[w.FLAG_A] = {"enabled": True, "salt": w.FLAG_A, "percentage": w.PERCENTAGE, "stage": 1}
    # B: "the split for subjects matching three conditions, legacy for the rest" is an exclude
    # cohort holding everyone who does NOT match all three, in front of the same split.
    flags[w.FLAG_B] = {
        "enabled": True,
        "salt": w.FLAG_B,
        "percentage": w.PERCENTAGE,
        "exclude_cohorts": ["outside-b-audience"],
        "stage": 1,
    }
    flags[w.FLAG_C] = {"enabled": False, "salt": w.FLAG_C, "percentage": w.PERCENTAGE, "stage": 1}
    cohorts = {
        "outside-b-audience": {
            "match_on": None,
            "rules": {
                "not": {
                    "all": [
                        {"attr": "country", "op": "in", "values": w.COUNTRIES_IN},
                        {"attr": "plan", "op": "eq", "values": ["pro"]},
                        {"attr": "age", "op": "gte", "values": [18]},
                    ]
                }
            },
            "include": [],
            "exclude": [],
        }
    }
    return {"schema": 1, "environment": "bench", "version": 1, "cohorts": cohorts, "flags": flags}


def turnout(use_evaluate: bool = False) -> tuple[str, dict[str, Scenario]]:
    from turnout import engine

    doc = turnout_doc()
    ruleset = engine.compile_ruleset(doc)
    contexts = w.subjects()
    scenarios: dict[str, Scenario] = {}
    for name, flag in (("A", w.FLAG_A), ("B", w.FLAG_B), ("C", w.FLAG_C)):
        if use_evaluate:
            evaluate = engine.evaluate

            def call(key: str, attrs: Any, flag: str = flag, evaluate: Any = evaluate) -> Any:
                return evaluate(doc, flag, key, attrs)
        else:
            decide = ruleset.decide

            def call(key: str, attrs: Any, flag: str = flag, decide: Any = decide) -> Any:
                return decide(flag, key, attrs)

        scenarios[name] = (call, contexts, lambda d: d.parallel)
    label = "turnout evaluate(dict)" if use_evaluate else "turnout Ruleset.decide"
    return label, scenarios


def turnout_evaluate() -> tuple[str, dict[str, Scenario]]:
    return turnout(use_evaluate=True)


# -- floor: one sha256 + one dict lookup -------------------------------------------------------


def floor() -> tuple[str, dict[str, Scenario]]:
    unpack = struct.Struct(">Q").unpack_from
    table = {
        name: (hashlib.sha256(f"{name}/".encode()), round(w.PERCENTAGE * 10_000))
        for name in [*w.FILLER, w.FLAG_A, w.FLAG_B, w.FLAG_C]
    }
    contexts = w.subjects()
    scenarios: dict[str, Scenario] = {}
    for name, flag in (("A", w.FLAG_A), ("B", w.FLAG_B), ("C", w.FLAG_C)):

        def call(key: str, attrs: Any, flag: str = flag, table: Any = table, unpack: Any = unpack) -> bool:
            hasher, threshold = table[flag]
            h = hasher.copy()
            h.update(key.encode())
            return bool(unpack(h.digest())[0] % 1_000_000 < threshold)

        scenarios[name] = (call, contexts, bool)
    return "floor (sha256 + dict lookup)", scenarios


# -- GrowthBook: one shared GrowthBook(features=...) -------------------------------------------


def growthbook() -> tuple[str, dict[str, Scenario]]:
    from growthbook import GrowthBook

    def rollout(flag: str, condition: dict[str, Any] | None = None) -> dict[str, Any]:
        rule: dict[str, Any] = {"force": True, "coverage": w.PERCENTAGE / 100, "hashAttribute": "id", "seed": flag}
        if condition:
            rule["condition"] = condition
        return {"defaultValue": False, "rules": [rule]}

    features = {name: rollout(name) for name in w.FILLER}
    features[w.FLAG_A] = rollout(w.FLAG_A)
    features[w.FLAG_B] = rollout(w.FLAG_B, {"country": {"$in": w.COUNTRIES_IN}, "plan": "pro", "age": {"$gte": 18}})
    features[w.FLAG_C] = {"defaultValue": False}  # a killed feature: no rules, off
    gb = GrowthBook(features=features)
    contexts = [(key, {"id": key, **attrs}) for key, attrs in w.subjects()]
    scenarios: dict[str, Scenario] = {}
    for name, flag in (("A", w.FLAG_A), ("B", w.FLAG_B), ("C", w.FLAG_C)):

        def call(key: str, attrs: Any, flag: str = flag, gb: Any = gb) -> bool:
            gb.set_attributes(attrs)
            return bool(gb.is_on(flag))

        scenarios[name] = (call, contexts, bool)
    return f"growthbook {_version('growthbook')}", scenarios


# -- Flagsmith: offline mode over a local environment document ---------------------------------


def flagsmith() -> tuple[str, dict[str, Scenario]]:
    from flagsmith import Flagsmith
    from flagsmith.offline_handlers import LocalFileHandler

    feature_states: list[dict[str, Any]] = []
    segments: list[dict[str, Any]] = []
    names = [*w.FILLER, w.FLAG_A, w.FLAG_B, w.FLAG_C]
    ids = {name: i + 1 for i, name in enumerate(names)}

    def state(name: str, enabled: bool, priority: int | None = None) -> dict[str, Any]:
        fs: dict[str, Any] = {
            "enabled": enabled,
            "feature": {"id": ids[name], "name": name},
            "feature_state_value": None,
            "featurestate_uuid": f"00000000-0000-0000-0000-{ids[name] + (0 if priority is None else 500000):012d}",
            "multivariate_feature_state_values": [],
        }
        if priority is not None:
            fs["feature_segment"] = {"priority": priority}
        return fs

    split = {"operator": "PERCENTAGE_SPLIT", "property_": "", "value": str(w.PERCENTAGE)}
    gates = [
        {"operator": "IN", "property_": "country", "value": ",".join(w.COUNTRIES_IN)},
        {"operator": "EQUAL", "property_": "plan", "value": "pro"},
        {"operator": "GREATER_THAN_INCLUSIVE", "property_": "age", "value": "18"},
    ]
    # Fillers are plain on/off features: every get_identity_flags() call evaluates every
    # feature and segment of the environment, so 997 more split segments would only add to
    # Flagsmith's time. The scenario flags use a segment override, Flagsmith's way to split.
    for name in w.FILLER:
        feature_states.append(state(name, True))
    for name, conditions in ((w.FLAG_A, [split]), (w.FLAG_B, [*gates, split])):
        feature_states.append(state(name, False))
        segments.append(
            {
                "id": ids[name],
                "name": f"{name}-segment",
                "rules": [
                    {"type": "ALL", "rules": [{"type": "ALL", "conditions": conditions, "rules": []}], "conditions": []}
                ],
                "feature_states": [state(name, True, priority=0)],
            }
        )
    feature_states.append(state(w.FLAG_C, False))
    document = {
        "api_key": "bench",
        "name": "bench",
        "feature_states": feature_states,
        "identity_overrides": [],
        "project": {"segments": segments},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(document, fh)
    client = Flagsmith(offline_mode=True, offline_handler=LocalFileHandler(fh.name))
    os.unlink(fh.name)
    contexts = w.subjects()
    scenarios: dict[str, Scenario] = {}
    for name, flag in (("A", w.FLAG_A), ("B", w.FLAG_B), ("C", w.FLAG_C)):

        def call(key: str, traits: Any, flag: str = flag, client: Any = client) -> bool:
            return bool(client.get_identity_flags(key, traits).is_feature_enabled(flag))

        scenarios[name] = (call, contexts, bool)
    return f"flagsmith {_version('flagsmith')} (offline)", scenarios


# -- Unleash: bootstrapped in-memory cache, initialize_client() not called ----------------------


def unleash() -> tuple[str, dict[str, Scenario]]:
    from UnleashClient import UnleashClient
    from UnleashClient.cache import BaseCache
    from UnleashClient.constants import FEATURES_URL

    class MemoryCache(BaseCache):
        def __init__(self) -> None:
            self._data: dict[str, Any] = {}

        def bootstrap_from_dict(self, initial_config: dict[str, Any]) -> None:
            self._data[FEATURES_URL] = json.dumps(initial_config)
            self.bootstrapped = True

        def set(self, key: str, value: Any) -> None:
            self._data[key] = value

        def mset(self, data: dict[str, Any]) -> None:
            self._data.update(data)

        def get(self, key: str, default: Any = None) -> Any:
            return self._data.get(key, default)

        def exists(self, key: str) -> bool:
            return key in self._data

        def destroy(self) -> None:
            self._data.clear()

    def toggle(name: str, enabled: bool = True, constraints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        strategy = {
            "name": "flexibleRollout",
            "parameters": {"rollout": str(int(w.PERCENTAGE)), "stickiness": "userId", "groupId": name},
            "constraints": constraints or [],
        }
        return {"name": name, "type": "release", "enabled": enabled, "strategies": [strategy]}

    gates = [
        {"contextName": "country", "operator": "IN", "values": w.COUNTRIES_IN},
        {"contextName": "plan", "operator": "IN", "values": ["pro"]},
        {"contextName": "age", "operator": "NUM_GTE", "value": "18"},
    ]
    features = [toggle(name) for name in w.FILLER]
    features += [toggle(w.FLAG_A), toggle(w.FLAG_B, constraints=gates), toggle(w.FLAG_C, enabled=False)]
    cache = MemoryCache()
    cache.bootstrap_from_dict({"version": 1, "features": features})
    client = UnleashClient(
        url="http://127.0.0.1:9/unused",
        app_name="bench",
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
    )
    contexts = [
        (key, {"userId": key, "properties": {k: str(v) for k, v in attrs.items()}}) for key, attrs in w.subjects()
    ]
    scenarios: dict[str, Scenario] = {}
    for name, flag in (("A", w.FLAG_A), ("B", w.FLAG_B), ("C", w.FLAG_C)):

        def call(key: str, ctx: Any, flag: str = flag, is_enabled: Any = client.is_enabled) -> bool:
            return bool(is_enabled(flag, ctx))

        scenarios[name] = (call, contexts, bool)
    return f"UnleashClient {_version('UnleashClient')}", scenarios


# -- LaunchDarkly: file data source, events off -------------------------------------------------


def launchdarkly() -> tuple[str, dict[str, Scenario]]:
    import ldclient
    from ldclient import Context
    from ldclient.config import Config
    from ldclient.integrations import Files

    def rollout() -> dict[str, Any]:
        on = int(w.PERCENTAGE * 1000)
        return {"variations": [{"variation": 0, "weight": 100_000 - on}, {"variation": 1, "weight": on}]}

    def flag(key: str, on: bool = True, rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {
            "key": key,
            "version": 1,
            "on": on,
            "salt": key,
            "variations": [False, True],
            "offVariation": 0,
            "fallthrough": {"variation": 0} if rules else {"rollout": rollout()},
            "targets": [],
            "contextTargets": [],
            "rules": rules or [],
            "prerequisites": [],
            "trackEvents": False,
            "clientSide": False,
        }

    gated = [
        {
            "id": "gated",
            "clauses": [
                {"attribute": "country", "op": "in", "values": w.COUNTRIES_IN, "negate": False},
                {"attribute": "plan", "op": "in", "values": ["pro"], "negate": False},
                {"attribute": "age", "op": "greaterThanOrEqual", "values": [18], "negate": False},
            ],
            "rollout": rollout(),
        }
    ]
    flags = {name: flag(name) for name in w.FILLER}
    flags[w.FLAG_A] = flag(w.FLAG_A)
    flags[w.FLAG_B] = flag(w.FLAG_B, rules=gated)
    flags[w.FLAG_C] = flag(w.FLAG_C, on=False)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"flags": flags}, fh)
    config = Config(
        sdk_key="bench-offline",
        update_processor_class=Files.new_data_source(paths=[fh.name]),
        send_events=False,
        diagnostic_opt_out=True,
    )
    ldclient.set_config(config)
    client = ldclient.get()
    os.unlink(fh.name)
    if not client.is_initialized():
        raise RuntimeError("LaunchDarkly file data source did not initialize")
    contexts = [
        (key, Context.builder(key).set("country", a["country"]).set("plan", a["plan"]).set("age", a["age"]).build())
        for key, a in w.subjects()
    ]
    scenarios: dict[str, Scenario] = {}
    for name, flag_key in (("A", w.FLAG_A), ("B", w.FLAG_B), ("C", w.FLAG_C)):

        def call(key: str, ctx: Any, flag_key: str = flag_key, variation: Any = client.variation) -> bool:
            return bool(variation(flag_key, ctx, False))

        scenarios[name] = (call, contexts, bool)
    return f"launchdarkly-server-sdk {_version('launchdarkly-server-sdk')}", scenarios


ADAPTERS: dict[str, Callable[[], tuple[str, dict[str, Scenario]]]] = {
    "turnout": turnout,
    "turnout_evaluate": turnout_evaluate,
    "floor": floor,
    "growthbook": growthbook,
    "flagsmith": flagsmith,
    "unleash": unleash,
    "launchdarkly": launchdarkly,
}


def main(name: str) -> None:
    label, scenarios = ADAPTERS[name]()
    out: dict[str, Any] = {"adapter": name, "label": label, "scenarios": {}}
    for scenario, (call, contexts, is_parallel) in scenarios.items():
        result = w.measure(call, contexts)
        share = sum(1 for key, ctx in contexts[:20_000] if is_parallel(call(key, ctx))) / 20_000
        result["parallel_share"] = share
        out["scenarios"][scenario] = result
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
