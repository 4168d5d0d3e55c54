"""Named prompt templates: the built-ins in Chinese and English, a custom folder that adds and overrides,
the errors (unknown template, missing variable, broken files, sandbox), and the templates over HTTP on the
OpenAI and simple chat faces and in `llmhost chat` (a real server on the embedded model, plus a scripted
engine to read the exact prompt)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import ValidationError

from llmhost.config import Settings
from llmhost.conversation.prompt_templates import (
    MissingTemplateVariable,
    PromptTemplate,
    PromptTemplateLibrary,
    UnknownPromptTemplate,
    apply_prompt_template,
    library_for,
)
from llmhost.errors import TemplateError
from tests.conftest import TEST_MAX_MODEL_LEN, start_server, stop_server
from tests.scripted_engine import ScriptedEngine, scripted_client

DOCS = ["《荷塘月色》是朱自清于1927年写的散文。", {"title": "西洲曲", "content": "采莲南塘秋，莲花过人头。"}]
QUESTION_ZH = "《荷塘月色》的作者是谁？"
QUESTION_EN = "Who wrote the essay?"


def render(name: str, **variables) -> dict[str, str]:
    messages = library_for(None).get(name).render(variables)
    return {m["role"]: m["content"] for m in messages}


def test_builtins_are_there_with_both_parts():
    library = library_for(None)
    assert {"rag-zh", "rag-en", "simple-zh"} <= set(library.names)
    for name in ("rag-zh", "rag-en", "simple-zh"):
        assert library.get(name).system is not None and "question" in library.get(name).variables


def test_rag_zh_renders_documents_and_question():
    parts = render(
        "rag-zh", question=QUESTION_ZH, documents=DOCS, today_date="2025-05-01", current_time="08:00"
    )
    assert "今天的日期是2025-05-01。当前时间是08:00。" in parts["system"]
    assert "无法回答" in parts["system"]  # says so when the documents do not cover it
    user = parts["user"]
    assert "[REF.1]\n《荷塘月色》是朱自清于1927年写的散文。" in user and "[REF.2] 西洲曲\n采莲南塘秋" in user
    assert user.rstrip().endswith(f"{QUESTION_ZH}\n</指令>")
    assert "<用户指令>" not in user  # no custom_prompt: its block is left out
    with_custom = render("rag-zh", question=QUESTION_ZH, context="文档", custom_prompt="回答要简短")["user"]
    assert "<用户指令>\n回答要简短\n</用户指令>" in with_custom and "<文档>\n文档\n</文档>" in with_custom


def test_rag_en_renders_in_english_with_todays_date_by_default():
    from datetime import date

    parts = render("rag-en", question=QUESTION_EN, context="Zhu Ziqing wrote it in 1927.")
    assert f"Today's date is {date.today():%Y-%m-%d}." in parts["system"]
    assert "do not cover" in parts["system"].lower() or "does not cover" in parts["system"].lower()
    assert "same language as the question" in parts["user"]
    assert "<documents>\nZhu Ziqing wrote it in 1927.\n</documents>" in parts["user"]


def test_simple_zh_needs_only_the_question():
    parts = render("simple-zh", question="什么是CUDA？")
    assert "什么是CUDA？" in parts["user"] and "用户自定义指令" not in parts["user"]


def test_unknown_template_and_missing_variables_name_them():
    with pytest.raises(UnknownPromptTemplate, match="unknown prompt template 'rag-fr'.*rag-en, rag-zh"):
        library_for(None).get("rag-fr")
    with pytest.raises(MissingTemplateVariable, match=r"'context' \(or 'documents'\), 'question'") as info:
        render("rag-en")
    assert info.value.param == "template_vars" and info.value.names == ["context", "question"]


def test_apply_keeps_history_replaces_system_and_takes_the_question_from_the_last_user_turn():
    messages = [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Ahoy"},
        {"role": "user", "content": QUESTION_EN},
    ]
    out = apply_prompt_template(messages, "rag-en", {"context": "Zhu Ziqing."})
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert "pirate" not in out[0]["content"] and out[1:3] == messages[1:3]
    assert QUESTION_EN in out[-1]["content"] and "Zhu Ziqing." in out[-1]["content"]
    explicit = apply_prompt_template(messages, "rag-en", {"context": "c", "question": "Other?"})
    assert "Other?" in explicit[-1]["content"] and QUESTION_EN not in explicit[-1]["content"]


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_custom_folder_adds_and_overrides(tmp_path):
    folder = write(
        tmp_path / "t",
        {
            "rag-en.user.jinja": "DOCS={{ context }} Q={{ question }}",  # overrides both parts
            "faq.system.jinja": "You answer FAQs for {{ product }}.",
            "faq.user.jinja": "{{ question }}",
        },
    )
    library = PromptTemplateLibrary.load(folder)
    assert {"faq", "rag-zh", "rag-en", "simple-zh"} <= set(library.names)
    assert library.get("rag-en").render({"context": "c", "question": "q"}) == [
        {"role": "user", "content": "DOCS=c Q=q"}
    ]
    assert library.get("faq").render({"question": "Price?", "product": "llmhost"})[0]["content"] == (
        "You answer FAQs for llmhost."
    )
    with pytest.raises(MissingTemplateVariable, match="'product'"):
        library.get("faq").render({"question": "Price?"})


@pytest.mark.parametrize(
    "files, message",
    [
        ({"bad.user.jinja": "{% if %}"}, "bad.*does not compile"),
        ({"lonely.system.jinja": "x"}, "lonely.system.jinja.*no matching NAME.user.jinja"),
    ],
)
def test_broken_folders_fail_at_load_naming_the_file(tmp_path, files, message):
    with pytest.raises(TemplateError, match=message):
        PromptTemplateLibrary.load(write(tmp_path / "t", files))


def test_settings_check_the_folder_at_start_up(tmp_path):
    with pytest.raises(ValidationError, match="not found"):
        Settings(prompt_templates=str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="does not compile"):
        Settings(prompt_templates=str(write(tmp_path / "t", {"x.user.jinja": "{{ }"})))


def test_templates_run_sandboxed():
    template = PromptTemplate("evil", "{{ question.__class__.__mro__ }}", None, "test")
    with pytest.raises(TemplateError, match="unsafe"):
        template.render({"question": "q"})


# -- over HTTP, exact prompts (scripted engine) ------------------------------------------------------
async def test_both_faces_render_the_template_into_the_prompt(tmp_path):
    folder = write(tmp_path / "t", {"echo.user.jinja": "CTX<{{ context }}> Q<{{ question }}>"})
    engine = ScriptedEngine()
    async with scripted_client(engine, prompt_templates=str(folder)) as client:
        r = await client.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "What?"}],
                "prompt_template": "echo",
                "template_vars": {"documents": ["one", "two"]},
            },
        )
        assert r.status_code == 200, r.text
        assert "CTX<[REF.1]\none\n\n[REF.2]\ntwo> Q<What?>" in engine.calls[-1].prompt_text
        r = await client.post(
            "/api/v1/chat",
            json={"message": "为什么？", "prompt_template": "echo", "template_vars": {"context": "文"}},
        )
        assert r.status_code == 200 and r.json()["success"] is True
        assert "CTX<文> Q<为什么？>" in engine.calls[-1].prompt_text
        r = await client.post(
            "/api/v1/chat",
            json={"message": "q", "prompt_template": "rag-zh", "template_vars": {"context": "文"}},
        )
        assert "<文档>\n文\n</文档>" in engine.calls[-1].prompt_text  # built-ins stay next to the folder's


# -- over HTTP, the real server ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def templated_server(tmp_path_factory):
    folder = write(
        tmp_path_factory.mktemp("templates"), {"brief.user.jinja": "Answer in three words: {{ question }}"}
    )
    srv = start_server(
        tmp_path_factory.mktemp("srv"),
        "--max-model-len",
        str(TEST_MAX_MODEL_LEN),
        "--served-model-name",
        "smol",
        "--prompt-templates",
        str(folder),
    )
    yield srv
    stop_server(srv)


@pytest.mark.e2e
def test_openai_face_with_the_sdk(templated_server):
    client = openai.OpenAI(base_url=f"{templated_server.url}/v1", api_key="none", max_retries=0)
    ask = [{"role": "user", "content": QUESTION_EN}]
    plain = client.chat.completions.create(model="smol", messages=ask, max_tokens=4, temperature=0)
    templated = client.chat.completions.create(
        model="smol",
        messages=ask,
        max_tokens=4,
        temperature=0,
        extra_body={"prompt_template": "rag-en", "template_vars": {"documents": DOCS}},
    )
    assert templated.choices[0].message.content is not None
    assert templated.usage.prompt_tokens > plain.usage.prompt_tokens + 100  # the template's text went in
    custom = client.chat.completions.create(
        model="smol", messages=ask, max_tokens=4, extra_body={"prompt_template": "brief"}
    )
    assert 0 < custom.usage.prompt_tokens - plain.usage.prompt_tokens < 20
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smol", messages=ask, extra_body={"prompt_template": "nope"})
    assert "'nope'" in info.value.body["message"] and info.value.body["param"] == "prompt_template"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smol", messages=ask, extra_body={"prompt_template": "rag-zh"})
    assert "'context'" in info.value.body["message"] and info.value.body["param"] == "template_vars"
    with pytest.raises(openai.BadRequestError, match="template_vars"):
        client.chat.completions.create(model="smol", messages=ask, extra_body={"template_vars": {"x": 1}})


@pytest.mark.e2e
def test_simple_face(templated_server):
    url = f"{templated_server.url}/api/v1/chat"
    body = {
        "message": QUESTION_ZH,
        "max_new_tokens": 4,
        "prompt_template": "rag-zh",
        "template_vars": {"documents": DOCS},
    }
    r = httpx.post(url, json=body, timeout=60)
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    r = httpx.post(url, json={**body, "template_vars": {}}, timeout=30)
    assert r.status_code == 400 and r.json()["success"] is False and "'context'" in r.json()["error"]
    r = httpx.post(url, json={**body, "prompt_template": "nope"}, timeout=30)
    assert r.status_code == 400 and "unknown prompt template 'nope'" in r.json()["error"]


def llmhost_chat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmhost", "chat", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.e2e
def test_chat_cli_template_and_context_file(templated_server, tmp_path):
    context = tmp_path / "docs.txt"
    context.write_text("Zhu Ziqing wrote 'Moonlight over the Lotus Pond' in 1927.", encoding="utf-8")
    url = templated_server.url
    r = llmhost_chat(
        "--url",
        url,
        "--template",
        "rag-en",
        "--context-file",
        str(context),
        "--once",
        QUESTION_EN,
        "--max-tokens",
        "6",
        "--temperature",
        "0",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    r = llmhost_chat("--url", url, "--template", "rag-en", "--once", QUESTION_EN)
    assert r.returncode == 1 and "'context'" in r.stderr
    r = llmhost_chat("--url", url, "--template", "nope", "--context-file", str(context), "--once", "q")
    assert r.returncode == 1 and "'nope'" in r.stderr
    r = llmhost_chat("--url", url, "--context-file", str(context), "--once", "q")
    assert r.returncode == 2 and "--template" in r.stderr


@pytest.mark.parametrize(
    "body, message",
    [
        ({"prompt_template": ""}, "unknown prompt template ''"),
        ({"prompt_template": "rag-en", "template_vars": {"documents": 5}}, "'documents' must be"),
        ({"prompt_template": "rag-en", "template_vars": "docs"}, "template_vars"),
        ({"template_vars": {"context": "c"}}, "'template_vars' needs a 'prompt_template'"),
    ],
)
async def test_odd_template_requests_are_400s(body, message):
    engine = ScriptedEngine()
    async with scripted_client(engine) as client:
        r = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}], **body}
        )
        assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
        r = await client.post("/api/v1/chat", json={"message": "q", **body})
        assert r.status_code == 400 and message in r.json()["error"], r.text
    assert not engine.calls


def test_a_conversation_without_a_user_turn_needs_the_question():
    with pytest.raises(MissingTemplateVariable, match="'question'"):
        apply_prompt_template([{"role": "system", "content": "s"}], "simple-zh", {})
