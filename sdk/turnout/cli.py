"""``turnout``: the command-line client of the management API (standard library only).

    turnout export DIR                     write the installation's configuration files into DIR
    turnout plan DIR [--save PLAN]         what applying DIR would change; exit 2 when there are changes
    turnout apply DIR [--plan PLAN]        apply DIR (as planned: refused when the installation moved since)
    turnout status [FLAG]                  flag states (and, for one flag, readiness per environment)
    turnout kill|rollback|advance FLAG --env ENV [--reason TEXT]
    turnout promote FLAG --from staging --to production   plan, guardrails, targeting: one reviewable change
    turnout audit export OUT [--format jsonl|csv] [--filter NAME=VALUE]...   (writes OUT.manifest.json too)
    turnout audit verify FILE MANIFEST [--public-key KEYS]                  offline; needs turnout[cli]

The server and the token come from ``--url`` / ``--token`` or ``TURNOUT_URL`` / ``TURNOUT_TOKEN``. Every
command takes ``--output json`` (machine-readable on stdout). Exit codes: 0 done (for ``plan``: no changes),
2 ``plan`` found changes, 1 an error (the server's message on stderr), 3 ``apply`` stopped part-way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_PARTIAL = 0, 1, 2, 3
CONFIG_SUFFIXES = (".yaml", ".yml", ".csv")
TIMEOUT = 120.0


class CliError(Exception):
    pass


class Api:
    """The management API with a bearer token; errors become ``CliError`` with the server's message."""

    def __init__(self, url: str, token: str):
        if not url:
            raise CliError("no server: pass --url or set TURNOUT_URL")
        if not token:
            raise CliError("no API token: pass --token or set TURNOUT_TOKEN")
        self.url, self.token = url.rstrip("/"), token

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        with self.open(method, path, body, query) as response:
            return json.loads(response.read() or b"null")

    def open(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        url = self.url + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=TIMEOUT)
        except urllib.error.HTTPError as exc:
            raise CliError(_server_error(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None


def _server_error(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code}"
    lines = [f"HTTP {exc.code} {error.get('code', '')}: {error.get('message', '')}"]
    for problem in error.get("problems", [])[:50]:
        lines.append(f"  {problem['file']}:{problem['line']}: {problem['field'] or '(file)'}: {problem['message']}")
    return "\n".join(lines)


# --- configuration files ----------------------------------------------------------------------------


def read_dir(directory: str) -> dict[str, str]:
    root = Path(directory)
    if not root.is_dir():
        raise CliError(f"{directory} is not a directory")
    files = {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
             for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in CONFIG_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(root).parts)}
    if not files:
        raise CliError(f"no configuration files (*.yaml, *.yml, *.csv) in {directory}")
    return files


def _git(directory: str, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def origin(directory: str, commit: str | None, path: str | None) -> dict[str, str]:
    """The commit id and the directory inside the repository, from the options or from git when it knows."""
    commit = commit or os.environ.get("TURNOUT_COMMIT") or _git(directory, "rev-parse", "HEAD")
    if path is None:
        path = _git(directory, "rev-parse", "--show-prefix").rstrip("/")
    return {"commit": commit or "", "path": path or ""}


def _plan_body(args: argparse.Namespace, files: dict[str, str]) -> dict[str, Any]:
    return {"files": files, "delete": args.delete, "create_environments": args.create_environments,
            "confirm_delete": args.confirm_delete}


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


SIGN = {"create": "+", "update": "~", "delete": "-", "unchanged": "="}
RULING = {"apply": "applies directly", "request": "needs approval: a change request",
          "refuse": "REFUSED"}


def print_plan(plan: dict[str, Any], out: IO[str]) -> None:
    for change in plan["changes"]:
        if change["op"] == "unchanged":
            continue
        where = f"  ({change['file']}:{change['line']})" if change["file"] else ""
        out.write(f"{SIGN[change['op']]} {change['kind']} {change['key']}: {change['action']}{where}\n")
        for name, diff in change["diff"].items():
            before = "(none)" if diff["before"] is None else _value(diff["before"])
            out.write(f"      {name}: {before} -> {_value(diff['after'])}\n")
        why = f" — {change['why']}" if change["why"] else ""
        out.write(f"    policy: {RULING.get(change['ruling'], change['ruling'])}{why}\n")
    s = plan["summary"]
    requests = s.get("change_requests", s["request"])
    carrying = f" carrying {s['request']} changes" if s["request"] != requests else ""
    out.write(f"Plan: {s['create']} to create, {s['update']} to change, {s['delete']} to delete, "
              f"{s['unchanged']} unchanged; {s['apply']} direct, {requests} change request(s){carrying}, "
              f"{s['refuse']} refused.\n")


def cmd_export(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    exported = api.request("GET", "/api/v1/config/export")
    root = Path(args.dir)
    files = exported["files"]
    for number, (path, text) in enumerate(sorted(files.items()), start=1):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        if args.output == "text" and args.progress:
            sys.stderr.write(f"\r{number}/{len(files)} files")
    if args.output == "text" and args.progress:
        sys.stderr.write("\n")
    if args.output == "json":
        json.dump({"written": sorted(files), "dir": str(root)}, out)
        out.write("\n")
    else:
        out.write(f"Exported {len(files)} files into {root}\n")
    return EXIT_OK


def cmd_plan(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    files = read_dir(args.dir)
    plan = api.request("POST", "/api/v1/config/plan", _plan_body(args, files))
    if args.save:
        Path(args.save).write_text(json.dumps(plan, indent=1), encoding="utf-8")
    if args.output == "json":
        json.dump(plan, out)
        out.write("\n")
    else:
        print_plan(plan, out)
    return EXIT_CHANGES if plan["has_changes"] else EXIT_OK


def cmd_apply(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    files = read_dir(args.dir)
    if args.plan:
        plan = json.loads(Path(args.plan).read_text(encoding="utf-8"))
    else:
        plan = api.request("POST", "/api/v1/config/plan", _plan_body(args, files))
    body = {**_plan_body(args, files), "versions": plan["versions"], "reason": args.reason,
            "origin": origin(args.dir, args.commit, args.path)}
    result = api.request("POST", "/api/v1/config/apply", body)
    if args.output == "json":
        json.dump(result, out)
        out.write("\n")
    else:
        for entry in result["results"]:
            line = f"{entry['result']:>14}  {entry['action']} {entry['key']}"
            if entry.get("change_request"):
                cr = entry["change_request"]
                line += f"  -> change request #{cr['id']} {api.url}{cr['page']}"
            if entry.get("error"):
                line += f"  ({entry['error']['message']})"
            out.write(line + "\n")
        counts = ", ".join(f"{n} {k}" for k, n in sorted(result["summary"].items())) or "nothing to do"
        out.write(f"Apply {'complete' if result['complete'] else 'STOPPED'}: {counts}.\n")
    return EXIT_OK if result["complete"] else EXIT_PARTIAL


def cmd_status(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    if args.flag:
        flags = [args.flag]
    else:
        flags = [f["key"] for f in _pages(api, "/api/v1/flags/")]
    report: dict[str, Any] = {}
    for key in flags:
        states = api.request("GET", f"/api/v1/flags/{urllib.parse.quote(key)}/states/")
        report[key] = {}
        for state in states:
            entry = {k: state.get(k) for k in ("enabled", "retired", "percentage", "compare_percentage", "stage",
                                               "version")}
            if args.flag:
                readiness = api.request("GET", f"/api/v1/flags/{urllib.parse.quote(key)}/states/"
                                               f"{urllib.parse.quote(state['environment'])}/readiness/")
                entry["readiness"] = {"verdict": readiness.get("verdict"), "reasons": readiness.get("reasons")}
            report[key][state["environment"]] = entry
    if args.output == "json":
        json.dump(report, out)
        out.write("\n")
        return EXIT_OK
    for key, states in report.items():
        out.write(f"{key}\n")
        for env, s in states.items():
            mode = "retired" if s["retired"] else ("on" if s["enabled"] else "off")
            line = (f"  {env:<14} {mode:<8} {s['percentage']:>7}%  compare {s['compare_percentage']}%  "
                    f"stage {s['stage']}")
            if "readiness" in s:
                line += f"  readiness: {s['readiness']['verdict']}"
            out.write(line + "\n")
    return EXIT_OK


def _pages(api: Api, path: str) -> Iterator[dict[str, Any]]:
    page = api.request("GET", path)
    while True:
        yield from (page["results"] if isinstance(page, dict) else page)
        nxt = page.get("next") if isinstance(page, dict) else None
        if not nxt:
            return
        parsed = urllib.parse.urlsplit(nxt)
        page = api.request("GET", parsed.path + (f"?{parsed.query}" if parsed.query else ""))


def _state_path(args: argparse.Namespace) -> str:
    return f"/api/v1/flags/{urllib.parse.quote(args.flag)}/states/{urllib.parse.quote(args.env)}/"


def _lever(action: str) -> Callable[[Api, argparse.Namespace, IO[str]], int]:
    def run(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
        body: dict[str, Any] = {"reason": args.reason}
        if action in {"advance", "rollback"}:
            body["version"] = api.request("GET", _state_path(args))["version"]
        result = api.request("POST", _state_path(args) + f"{action}/", body)
        if args.output == "json":
            json.dump(result, out)
            out.write("\n")
        elif isinstance(result, dict) and result.get("change_request"):
            cr = result["change_request"]
            out.write(f"{action} of {args.flag}@{args.env}: waiting for approval, change request #{cr.get('id')}\n")
        else:
            out.write(f"{action} of {args.flag}@{args.env}: done\n")
        return EXIT_OK
    return run


def cmd_promote(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    path = f"/api/v1/flags/{urllib.parse.quote(args.flag)}/states/{urllib.parse.quote(args.to)}/promote/"
    result = api.request("POST", path, {"from_environment": args.source, "reason": args.reason})
    if args.output == "json":
        json.dump(result, out)
        out.write("\n")
    elif isinstance(result, dict) and result.get("change_request"):
        cr = result["change_request"]
        out.write(f"promote {args.flag} from {args.source} to {args.to}: waiting for approval, change request "
                  f"#{cr.get('id')}\n")
    else:
        out.write(f"promote {args.flag} from {args.source} to {args.to}: done\n")
    return EXIT_OK


def cmd_audit_export(api: Api, args: argparse.Namespace, out: IO[str]) -> int:
    query = {"format": args.format}
    for item in args.filter:
        name, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--filter takes NAME=VALUE, not {item!r}")
        query[name] = value
    written = 0
    with api.open("GET", "/api/v1/audit/export", query=query) as response, open(args.out, "wb") as fh:
        link = response.headers.get("Link", "")
        while chunk := response.read(1 << 16):
            fh.write(chunk)
            written += len(chunk)
            if args.output == "text":
                sys.stderr.write(f"\r{written:,} bytes")
    if args.output == "text":
        sys.stderr.write("\n")
    manifest_path = link.partition("<")[2].partition(">")[0]
    if not manifest_path:
        raise CliError("the server sent no manifest link with the export")
    manifest = api.request("GET", urllib.parse.urlsplit(manifest_path).path)
    Path(args.out + ".manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    if args.output == "json":
        json.dump({"file": args.out, "manifest": args.out + ".manifest.json", "bytes": written,
                   "count": manifest.get("count")}, out)
        out.write("\n")
    else:
        out.write(f"Wrote {args.out} ({manifest.get('count')} events) and {args.out}.manifest.json\n")
    return EXIT_OK


def cmd_audit_verify(api: Api | None, args: argparse.Namespace, out: IO[str]) -> int:
    try:
        from turnout import _verify_export as verifier  # needs cryptography: the optional extra turnout[cli]
    except ImportError:
        raise CliError("audit verify checks Ed25519 signatures: install the extra, pip install 'turnout[cli]'") \
            from None
    lines: list[str] = []
    try:
        manifest = verifier.verify(args.file, args.manifest, args.public_key, report=lines.append)
    except (verifier.VerificationError, OSError, KeyError, ValueError) as exc:
        if args.output == "json":
            json.dump({"verified": False, "error": str(exc), "checks": lines}, out)
            out.write("\n")
        else:
            out.write("\n".join([*lines, f"FAILED: {exc}"]) + "\n")
        return EXIT_ERROR
    if args.output == "json":
        json.dump({"verified": True, "count": manifest["count"], "key_id": manifest["key_id"], "checks": lines}, out)
        out.write("\n")
    else:
        out.write("\n".join([*lines, f"VERIFIED: {manifest['count']} events, signed by {manifest['key_id']}"]) + "\n")
    return EXIT_OK


# --- arguments -------------------------------------------------------------------------------------


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="the directory of configuration files")
    parser.add_argument("--delete", action="store_true", help="also delete objects missing from the files")
    parser.add_argument("--confirm-delete", action="append", default=[], metavar="FLAG",
                        help="a flag SDKs still evaluate that may be killed and deleted (repeatable)")
    parser.add_argument("--create-environments", action="store_true",
                        help="create environments the files name (bootstrapping an empty installation)")


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("TURNOUT_URL", ""), help="server (TURNOUT_URL)")
    common.add_argument("--token", default=os.environ.get("TURNOUT_TOKEN", ""), help="API token (TURNOUT_TOKEN)")
    common.add_argument("--output", choices=["text", "json"], default="text")
    top = argparse.ArgumentParser(prog="turnout", description="Turnout's command-line client (management API).",
                                  parents=[common])
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", parents=[common], help="write the configuration files of the installation")
    p.add_argument("dir")
    p.add_argument("--progress", action="store_true", help="show files written on stderr")
    p.set_defaults(run=cmd_export)
    p = sub.add_parser("plan", parents=[common], help="what applying the files would change (exit 2: changes)")
    _config_options(p)
    p.add_argument("--save", metavar="PLAN", help="also write the plan (JSON) for `apply --plan`")
    p.set_defaults(run=cmd_plan)
    p = sub.add_parser("apply", parents=[common], help="apply the files")
    _config_options(p)
    p.add_argument("--plan", metavar="PLAN", help="apply as this saved plan read the installation")
    p.add_argument("--commit", help="commit id for the audit events (default: git, or TURNOUT_COMMIT)")
    p.add_argument("--path", help="the directory's path in the repository (default: git)")
    p.add_argument("--reason", default="", help="why, for the audit events")
    p.set_defaults(run=cmd_apply)
    p = sub.add_parser("status", parents=[common], help="flag states (one flag: with readiness)")
    p.add_argument("flag", nargs="?")
    p.set_defaults(run=cmd_status)
    for action, text in (("kill", "everyone to legacy, now"), ("rollback", "back one stage, now"),
                         ("advance", "on to the next stage")):
        p = sub.add_parser(action, parents=[common], help=text)
        p.add_argument("flag")
        p.add_argument("--env", required=True)
        p.add_argument("--reason", default="")
        p.set_defaults(run=_lever(action))
    p = sub.add_parser("promote", parents=[common], help="copy plan, guardrails and targeting to another environment")
    p.add_argument("flag")
    p.add_argument("--from", dest="source", required=True, metavar="ENV")
    p.add_argument("--to", required=True, metavar="ENV")
    p.add_argument("--reason", default="")
    p.set_defaults(run=cmd_promote)
    audit = sub.add_parser("audit", help="audit log exports and their offline verification")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    p = audit_sub.add_parser("export", parents=[common], help="export events and their signed manifest")
    p.add_argument("out")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE",
                   help="an events filter (since, action_prefix, object_key...); repeatable")
    p.set_defaults(run=cmd_audit_export)
    p = audit_sub.add_parser("verify", parents=[common], help="verify an export offline with its manifest")
    p.add_argument("file")
    p.add_argument("manifest", nargs="?")
    p.add_argument("--public-key", action="append", default=[], help="trusted public key file (repeatable)")
    p.set_defaults(run=cmd_audit_verify, offline=True)
    return top


def main(argv: list[str] | None = None, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    args = parser().parse_args(argv)
    try:
        api = None if getattr(args, "offline", False) else Api(args.url, args.token)
        code: int = args.run(api, args, out)
        return code
    except CliError as exc:
        if args.output == "json":
            json.dump({"error": str(exc)}, sys.stderr)
            sys.stderr.write("\n")
        else:
            sys.stderr.write(f"turnout: {exc}\n")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
