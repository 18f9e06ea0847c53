"""UI forms for cohorts: shape checks here, rules checked by the engine through the services."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.urls import reverse

from cohorts.models import MemberKind
from cohorts.services import MAX_MEMBERS_PER_REQUEST, subject_problem
from common.charsets import declared_charset, text_encoding
from common.jsonio import JsonInputError, loads
from rollout.forms import ServiceForm

HEADER_NAMES = {"subject", "key", "member", "subject_key", "id"}
UTF8_CODECS = {"utf-8", "utf-8-sig", "ascii"}  # codecs.lookup() names read correctly as UTF-8
MAX_REPORTED_ERRORS = 20


class RulesField(forms.CharField):
    """JSON text → rules (or None when empty); the engine checks the meaning when the service saves."""

    widget = forms.Textarea(attrs={"rows": 8, "spellcheck": "false"})

    def to_python(self, value: Any) -> Any:
        text = (super().to_python(value) or "").strip()
        if not text:
            return None
        try:
            return loads(text)
        except JsonInputError as exc:
            raise forms.ValidationError(exc.message) from None

    def prepare_value(self, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, indent=2)


RULES_HELP = ('JSON: {"all": [...]}, {"any": [...]} or {"not": ...} over conditions '
              '{"attr": "country", "op": "in", "values": ["DE", "FR"]}. Empty: no rules (members only).')


class CohortForm(ServiceForm):
    key = forms.CharField(max_length=63, help_text="Lowercase letters, digits, '-', '_' or '.'; never changes.")
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    match_on = forms.CharField(required=False, max_length=100, label="Match members on",
                               help_text="Attribute the member lists hold, e.g. tenant_id (empty: the subject key).")
    rules = RulesField(required=False, help_text=RULES_HELP)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Immediate validation while typing: the engine checks the rules and says which part is wrong.
        self.fields["rules"].widget.attrs.update({
            "hx-post": reverse("ui:cohort-validate-rules"), "hx-trigger": "input changed delay:400ms",
            "hx-target": "#rules-feedback", "hx-swap": "outerHTML",
            "aria-describedby": "id_rules_helptext rules-feedback",
        })


class CohortEditForm(CohortForm):
    version = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(required=False, max_length=500)
    field_order = ["name", "description", "match_on", "reason", "rules"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        del self.fields["key"]


class MemberUploadForm(ServiceForm):
    file = forms.FileField(label="CSV file", help_text="One subject key per line (first column); a header row "
                                                       "named subject or key is skipped. Up to 100,000 rows.")
    kind = forms.ChoiceField(choices=MemberKind.choices, initial=MemberKind.INCLUDE, label="Add them to")
    reason = forms.CharField(required=False, max_length=500)

    def clean_file(self) -> Any:
        """The file is read as UTF-8: a part that declares another charset is refused, not misread."""
        upload = self.cleaned_data["file"]
        declared = declared_charset(upload)
        if declared and text_encoding(declared) not in UTF8_CODECS:
            raise forms.ValidationError(f"the file is declared as charset '{declared[:40]}'; upload UTF-8 text")
        return upload


class MemberRemoveForm(ServiceForm):
    subjects = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text="One subject key per line.")
    reason = forms.CharField(required=False, max_length=500)

    def clean_subjects(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["subjects"].splitlines() if line.strip()]


class TestSubjectForm(ServiceForm):
    key = forms.CharField(max_length=255, required=False, label="Subject key")
    attributes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
                                 help_text='JSON object, e.g. {"country": "DE", "plan": "pro"}')

    def clean_attributes(self) -> dict[str, Any]:
        text = self.cleaned_data.get("attributes", "").strip()
        if not text:
            return {}
        try:
            value = loads(text)
        except JsonInputError as exc:
            raise forms.ValidationError(exc.message) from None
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object")
        return value


@dataclass
class ParsedMembers:
    subjects: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bad_rows: int = 0
    rows: int = 0


def parse_member_csv(data: bytes) -> ParsedMembers:
    """Read subject keys from a CSV upload, reporting every bad row by its line number."""
    result = ParsedMembers()

    def bad(line: int, message: str) -> None:
        result.bad_rows += 1
        if len(result.errors) < MAX_REPORTED_ERRORS:
            result.errors.append(f"line {line}: {message}")

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        result.errors.append(f"the file is not UTF-8 text (byte {exc.start})")
        result.bad_rows = 1
        return result
    reader = csv.reader(io.StringIO(text, newline=""))
    seen: set[str] = set()
    try:
        for row in reader:
            line = reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells):
                continue  # blank lines are not rows
            if line == 1 and cells[0].lower() in HEADER_NAMES:
                continue
            result.rows += 1
            subject = cells[0]
            problem = subject_problem(subject) if subject else "empty subject key in the first column"
            if problem:
                bad(line, problem)
            elif any(cells[1:]):
                bad(line, "more than one column; put one subject key per line")
            elif subject not in seen:
                seen.add(subject)
                result.subjects.append(subject)
    except csv.Error as exc:
        bad(reader.line_num, f"not valid CSV ({exc})")
    if len(result.subjects) > MAX_MEMBERS_PER_REQUEST:
        result.errors.insert(0, f"{len(result.subjects):,} subjects: at most {MAX_MEMBERS_PER_REQUEST:,} per upload; "
                                "split the file")
        result.bad_rows += 1
    if result.bad_rows > len(result.errors):
        result.errors.append(f"… and {result.bad_rows - len(result.errors)} more bad rows")
    return result
