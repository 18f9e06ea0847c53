"""``GET /api/v1/sdk/cohorts/<key>/members``: a large cohort's member-list document (``turnout.members``).

Readable with the SDK key of an environment whose ruleset references the cohort's list (another
environment's cohorts answer 404). ``ETag`` per list version; a matching ``If-None-Match`` answers 304
after reading only the ETag; ``Accept-Encoding: gzip`` gets the bytes compressed once per version;
``?since=<version>`` gets a delta (what was added and removed since that version) when one is smaller,
else the whole list. docs/sdk-protocol.md, "Member lists".
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from django.http import HttpRequest, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from turnout.members import MEDIA_TYPE

from common.schema import ERROR_RESPONSES
from rollout.delivery.lean import described, error_response, sdk_guard
from rollout.delivery.members import member_delta, member_list
from rollout.delivery.ruleset import compress, get_ruleset, gzip_etag
from rollout.delivery.serving import accepts_gzip, etag_matches

_lock = threading.Lock()
# (environment id, ruleset version) -> the member lists that version references (cohort -> version)
_refs: OrderedDict[tuple[int, int], dict[str, int]] = OrderedDict()


def referenced_lists(environment_id: int) -> dict[str, int] | None:
    """The member lists the environment's current ruleset references; None when it is gone."""
    built = get_ruleset(environment_id, refs=True)
    if built is None:
        return None
    found = _refs.get((environment_id, built.version))
    if found is None:
        cohorts = built.document().get("cohorts") or {}
        found = {k: int(c["members"]["version"]) for k, c in cohorts.items() if "members" in c}
        with _lock:
            _refs[(environment_id, built.version)] = found
            while len(_refs) > 64:
                _refs.popitem(last=False)
    return found


@described({"GET": {
    "operation_id": "sdk_cohort_members",
    "summary": "A large cohort's member lists (hashed), referenced by the ruleset",
    "description": "`application/vnd.turnout.members` (docs/sdk-protocol.md, \"Member lists\"): sorted 80-bit "
                   "hashes of the include and exclude lists. `ETag` per list version, `304` on a matching "
                   "`If-None-Match`, gzip with `Accept-Encoding: gzip` (its ETag ends in `-gz\"`); with "
                   "`since=<version>` a delta (header `X-Turnout-Members-Base`) when it is smaller than the list.",
    "parameters": [OpenApiParameter("key", OpenApiTypes.STR, OpenApiParameter.PATH),
                   OpenApiParameter("since", OpenApiTypes.INT, OpenApiParameter.QUERY, required=False),
                   OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False),
                   OpenApiParameter("Accept-Encoding", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False)],
    "responses": {(200, MEDIA_TYPE): OpenApiResponse(OpenApiTypes.BINARY, description="The member list or a delta"),
                  304: OpenApiResponse(description="Unchanged since the ETag given"), **ERROR_RESPONSES},
    "tags": ["sdk"],
}}, name="CohortMembersView")
def cohort_members(request: HttpRequest, key: str) -> HttpResponse:
    guarded = sdk_guard(request)
    if isinstance(guarded, HttpResponse):
        return guarded
    principal = guarded[0]
    since_raw = request.GET.get("since")
    since: int | None = None
    if since_raw is not None:
        if not since_raw.isdigit() or len(since_raw) > 18:
            return error_response(400, "invalid", "since: must be a list version (a non-negative integer)",
                                  {"since": ["must be a non-negative integer"]})
        since = int(since_raw)
    refs = referenced_lists(principal.environment_id)
    if refs is None or key not in refs:
        return error_response(404, "not_found", f"Cohort '{key}' has no member list in environment "
                                                f"'{principal.environment}'.")
    gzipped = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    if_none_match = request.headers.get("If-None-Match", "")
    entry = member_list(key, need="etag")
    if entry is None:
        return error_response(404, "not_found", f"Cohort '{key}' does not exist.")
    if etag_matches(if_none_match, entry.etag, gzip_etag(entry.etag)):
        response = HttpResponse(status=304)
    else:
        entry = member_list(key, entry.version, need="gz" if gzipped else "body") or entry
        delta = member_delta(key, since, entry) if since is not None else None
        body = delta if delta is not None else entry.gzipped if gzipped else entry.body
        if delta is not None and gzipped:
            body = compress(delta)
        response = HttpResponse(body, content_type=MEDIA_TYPE)
        if gzipped:
            response["Content-Encoding"] = "gzip"
        if delta is not None:
            response["X-Turnout-Members-Base"] = str(since)
    response["ETag"] = gzip_etag(entry.etag) if gzipped else entry.etag
    response["Cache-Control"] = "no-cache"
    response["Vary"] = "Accept-Encoding"
    response["X-Turnout-Members-Version"] = str(entry.version)
    return response
