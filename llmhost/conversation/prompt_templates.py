"""Named prompt templates: a system part and a user part, rendered from variables, picked per request.

A RAG team tunes one prompt (seed 004 ends with theirs) and every client should use it, instead of each
client pasting its own copy. A template is selected with `prompt_template` (and its variables passed in
`template_vars`) on OpenAI chat and on the simple chat API, or `llmhost chat --template NAME`.

Built-ins (files under `llmhost/conversation/prompt_templates/`):
  rag-zh, rag-en   answer only from the given documents, in the question's language, and say so when the
                   documents do not cover the question (seed 004's tuned prompt, and its English twin)
  simple-zh        seed 004's plain assistant prompt

Variables: `question` (default: the text of the request's last user message), `context` or `documents`
(a string, or a list of strings or `{"title", "content"}` objects, numbered `[REF.n]`; either fills the
other), `custom_prompt` (default empty), `today_date` and `current_time` (default: now, server time).
Any other key of `template_vars` reaches the template too.

`--prompt-templates DIR` adds templates and overrides built-ins of the same name. Layout: one template
per name, `NAME.user.jinja` (required) and `NAME.system.jinja` (optional); a name found in DIR replaces
the built-in whole (both parts). Files are read once, when the server starts.

Templates render in Jinja's immutable sandbox with StrictUndefined: a variable the template uses but the
request did not give is a 400 naming it, never a silently empty prompt.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmhost.errors import InvalidRequest, TemplateError

log = logging.getLogger("llmhost.conversation")

BUILTIN_DIR = Path(__file__).with_name("prompt_templates")
_USER_SUFFIX = ".user.jinja"
_SYSTEM_SUFFIX = ".system.jinja"

_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
)


class UnknownPromptTemplate(InvalidRequest):
    def __init__(self, name: str, available: Sequence[str]) -> None:
        super().__init__(
            f"unknown prompt template '{name}'; available: {', '.join(available) or 'none'}",
            param="prompt_template",
            code="unknown_prompt_template",
        )


class MissingTemplateVariable(InvalidRequest):
    def __init__(self, template: str, names: Sequence[str]) -> None:
        quoted = ", ".join(f"'{n}' (or 'documents')" if n == "context" else f"'{n}'" for n in names)
        super().__init__(
            f"prompt template '{template}' needs the variable(s) {quoted}: pass them in template_vars",
            param="template_vars",
            code="missing_template_variable",
        )
        self.names = list(names)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    user: str  # Jinja source of the user part
    system: str | None  # Jinja source of the system part, when there is one
    origin: str  # where it was read from (for messages)

    @functools.cached_property
    def _compiled(self) -> tuple[jinja2.Template | None, jinja2.Template, frozenset[str]]:
        names: set[str] = set()
        compiled: list[jinja2.Template | None] = []
        for part, source in (("system", self.system), ("user", self.user)):
            if source is None:
                compiled.append(None)
                continue
            try:
                names |= meta.find_undeclared_variables(_ENV.parse(source))
                compiled.append(_ENV.from_string(source))
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"prompt template '{self.name}' ({part} part, {self.origin}) does not compile: {exc}"
                ) from exc
        system, user = compiled
        assert user is not None
        return system, user, frozenset(names)

    @property
    def variables(self) -> frozenset[str]:
        """The variables the template reads."""
        return self._compiled[2]

    def render(self, variables: Mapping[str, Any]) -> list[dict[str, str]]:
        """The system message (when the template has one) and the user message."""
        system, user, needed = self._compiled
        values = with_defaults(variables)
        missing = sorted(needed - values.keys())
        if missing:
            raise MissingTemplateVariable(self.name, missing)
        try:
            messages = [{"role": "system", "content": system.render(values).strip()}] if system else []
            messages.append({"role": "user", "content": user.render(values).strip()})
        except jinja2.UndefinedError as exc:  # e.g. an attribute of a variable that is not there
            raise InvalidRequest(
                f"prompt template '{self.name}' could not render: {exc.message}", param="template_vars"
            ) from exc
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"prompt template '{self.name}' tried an unsafe operation: {exc}") from exc
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            raise InvalidRequest(
                f"prompt template '{self.name}' could not render: {exc}", param="template_vars"
            ) from exc
        return messages


def with_defaults(variables: Mapping[str, Any]) -> dict[str, Any]:
    """The variables with the documented defaults filled in (`documents` and `context` fill each other)."""
    values = dict(variables)
    now = datetime.now()
    values.setdefault("today_date", now.strftime("%Y-%m-%d"))
    values.setdefault("current_time", now.strftime("%H:%M:%S"))
    values.setdefault("custom_prompt", "")
    if "context" not in values and "documents" in values:
        values["context"] = format_documents(values["documents"])
    elif "documents" not in values and "context" in values:
        values["documents"] = [values["context"]]
    return values


def format_documents(documents: Any) -> str:
    """Documents as one context string: each numbered `[REF.n]`, with its title when it has one."""
    if isinstance(documents, str):
        return documents
    if not isinstance(documents, Sequence):
        raise InvalidRequest("'documents' must be a string or a list", param="template_vars.documents")
    blocks = []
    for i, doc in enumerate(documents, 1):
        if isinstance(doc, Mapping):
            title = doc.get("title") or doc.get("source")
            text = doc.get("content") or doc.get("text") or ""
            blocks.append(f"[REF.{i}] {title}\n{text}" if title else f"[REF.{i}]\n{text}")
        else:
            blocks.append(f"[REF.{i}]\n{doc}")
    return "\n\n".join(blocks)


@dataclass(frozen=True)
class PromptTemplateLibrary:
    templates: Mapping[str, PromptTemplate]

    @classmethod
    def load(cls, directory: str | Path | None = None) -> PromptTemplateLibrary:
        """The built-ins, then `directory`'s templates over them. Every template is compiled here, so a
        broken file fails at start-up, naming it."""
        templates = read_directory(BUILTIN_DIR)
        if directory is not None:
            extra = read_directory(Path(directory))
            overridden = sorted(templates.keys() & extra.keys())
            if overridden:
                log.info(
                    "prompt templates from %s override the built-in(s) %s", directory, ", ".join(overridden)
                )
            templates.update(extra)
        for template in templates.values():
            template.variables  # noqa: B018 — compiles both parts now
        return cls(templates)

    @property
    def names(self) -> list[str]:
        return sorted(self.templates)

    def get(self, name: str) -> PromptTemplate:
        try:
            return self.templates[name]
        except KeyError:
            raise UnknownPromptTemplate(name, self.names) from None


def read_directory(directory: Path) -> dict[str, PromptTemplate]:
    """`NAME.user.jinja` (+ optional `NAME.system.jinja`) files of one directory."""
    if not directory.is_dir():
        raise TemplateError(f"prompt template directory not found: {directory}")
    templates: dict[str, PromptTemplate] = {}
    for user_path in sorted(directory.glob(f"*{_USER_SUFFIX}")):
        name = user_path.name[: -len(_USER_SUFFIX)]
        system_path = directory / f"{name}{_SYSTEM_SUFFIX}"
        system = system_path.read_text(encoding="utf-8") if system_path.is_file() else None
        templates[name] = PromptTemplate(name, user_path.read_text(encoding="utf-8"), system, str(user_path))
    orphans = [
        p.name
        for p in directory.glob(f"*{_SYSTEM_SUFFIX}")
        if p.name[: -len(_SYSTEM_SUFFIX)] not in templates
    ]
    if orphans:
        raise TemplateError(
            f"prompt template file(s) {', '.join(sorted(orphans))} in {directory} have no matching "
            f"NAME{_USER_SUFFIX} (the user part is required)"
        )
    return templates


@functools.lru_cache(maxsize=8)
def library_for(directory: str | None) -> PromptTemplateLibrary:
    """The library for a `--prompt-templates` value, loaded once per process."""
    return PromptTemplateLibrary.load(directory)


def messages_for_request(
    messages: list[dict[str, Any]],
    name: str | None,
    template_vars: Mapping[str, Any] | None,
    *,
    directory: str | None = None,
) -> list[dict[str, Any]]:
    """A request's messages, rewritten by the named template it asks for (`name`), else as they are;
    `template_vars` without a `name` is a 400."""
    if name is None:
        if template_vars is not None:
            raise InvalidRequest("'template_vars' needs a 'prompt_template'", param="template_vars")
        return messages
    return apply_prompt_template(messages, name, template_vars, directory=directory)


def apply_prompt_template(
    messages: Sequence[Mapping[str, Any]],
    name: str,
    template_vars: Mapping[str, Any] | None,
    *,
    directory: str | None = None,
) -> list[dict[str, Any]]:
    """Rewrite a conversation with a named template: the template's system part replaces the
    conversation's system messages, and its user part replaces the last user message, whose text is
    the default `question`. Earlier turns are kept, so follow-up questions keep their history."""
    template = library_for(directory).get(name)
    variables = dict(template_vars or {})
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
    if "question" not in variables and last_user is not None:
        variables["question"] = _text(messages[last_user].get("content"))
    rendered = template.render(variables)
    system = [m for m in rendered if m["role"] == "system"]
    user = rendered[-1]
    turns = [dict(m) for i, m in enumerate(messages) if i != last_user]
    if system:
        turns = [m for m in turns if m.get("role") not in ("system", "developer")]
    return [*system, *turns, user]


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)
