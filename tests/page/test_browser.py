"""The chat page in a real headless Chromium, against real servers: the embedded model for the whole
path, the scripted engine's server (tests/page/scripted_server.py) where a test needs to know what the
model says (thinking, markup, a long answer to stop)."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.page.conftest import API_KEY, chromium_skip_reason, save_screenshot
from tests.page.scripted_server import ANSWER, ECHO_PREFIX, NUM_LONG_PIECES, THINKING

if (_reason := chromium_skip_reason()) is not None:
    pytest.skip(_reason, allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402 — only where chromium is there to drive

pytestmark = pytest.mark.e2e

IDLE = re.compile(r"^vllm:num_requests_running\{[^}]*\} 0\.0$", re.M)
STATS = re.compile(r"TTFT \d+(\.\d+)? m?s · \d+\.\d tok/s · \d+ tokens")


def ask(page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def last_answer(page):
    return page.locator(".message.assistant").last


def wait_answered(page, timeout_s: float = 15) -> None:
    expect(page.locator(".message.assistant.streaming")).to_have_count(0, timeout=timeout_s * 1000)
    expect(page.locator("#send")).to_be_visible()


def record_answer_lengths(page) -> None:
    """From now on, every length the last answer's text takes on the way is kept in window.lengths."""
    page.evaluate(
        """() => {
            window.lengths = [];
            new MutationObserver(() => {
                const answers = document.querySelectorAll('.message.assistant .content');
                const text = answers.length ? answers[answers.length - 1].textContent : '';
                if (text.length && window.lengths.at(-1) !== text.length) window.lengths.push(text.length);
            }).observe(document.getElementById('messages'),
                       {subtree: true, childList: true, characterData: true});
        }"""
    )


def test_the_page_streams_an_answer_from_the_real_model_offline_and_keeps_it(server, open_page):
    session = open_page(f"{server.url}/")
    page = session.page
    expect(page.locator("#model-status")).to_contain_text("llama.cpp")
    page.click("#toggle-settings")
    page.fill("#max-tokens", "12")
    page.fill("#temperature", "0")
    page.click("#toggle-settings")
    record_answer_lengths(page)

    ask(page, "What is the capital of France?")
    expect(page.locator("#stop")).to_be_visible()
    wait_answered(page, timeout_s=120)  # 12 tokens take a second on 2 idle cores, far longer on busy ones

    answer = last_answer(page).locator(".content").inner_text()
    assert answer.strip()
    lengths = page.evaluate("window.lengths")
    assert len(lengths) >= 3, lengths  # the text changed piece by piece, not once at the end
    stats = last_answer(page).locator(".stats").inner_text()
    assert STATS.search(stats), stats
    num_tokens = int(re.search(r"(\d+) tokens", stats).group(1))
    assert 1 <= num_tokens <= 12 and "~" not in stats  # counted by the server (include_usage)
    chat = session.chat_requests()[0].post_data_json
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["max_tokens"] == 12 and chat["temperature"] == 0 and chat["model"] == "smol"
    save_screenshot(page, "answer-from-the-embedded-model")

    page.reload()
    expect(page.locator(".message.user .content")).to_have_text("What is the capital of France?")
    expect(last_answer(page).locator(".content")).to_have_text(answer)
    expect(last_answer(page).locator(".stats")).to_have_text(stats)
    expect(page.locator(".conversation.active")).to_contain_text("What is the capital of France?")
    # Page, scripts, styles and every API call: nothing left the machine.
    assert session.hosts() == {"127.0.0.1"}, sorted(r.url for r in session.requests)
    paths = {r.url.removeprefix(server.url) for r in session.requests}
    assert {"/", "/page/app.js", "/page/style.css", "/v1/models", "/v1/chat/completions"} <= paths


def test_stop_cuts_the_answer_and_the_server_stops_generating(scripted_server, open_page):
    page = open_page(f"{scripted_server.url}/").page
    ask(page, "long answer please")
    expect(last_answer(page).locator(".content")).to_contain_text("word5 ")
    page.click("#stop")
    wait_answered(page)

    reply = last_answer(page)
    text = reply.locator(".content").inner_text()
    num_words = len(text.split())
    assert 5 < num_words < NUM_LONG_PIECES
    expect(reply.locator(".stats")).to_contain_text("stopped")
    expect(reply.locator(".stats")).to_contain_text("~")  # no usage came: the deltas were counted
    deadline = time.monotonic() + 10
    while not IDLE.search(httpx.get(f"{scripted_server.url}/metrics").text):
        assert time.monotonic() < deadline, "the server kept generating after the page stopped"
        time.sleep(0.1)
    page.wait_for_timeout(300)
    assert reply.locator(".content").inner_text() == text


def test_raw_think_tags_are_shown_apart_and_collapsible(scripted_server, open_page):
    page = open_page(f"{scripted_server.url}/").page
    ask(page, "think first, then answer")
    wait_answered(page)
    reply = last_answer(page)
    expect(reply.locator(".content")).to_have_text(ANSWER)
    thinking = reply.locator("details.thinking")
    expect(thinking).to_be_visible()
    assert thinking.evaluate("d => d.open") is False  # closed once the answer started
    reply.locator("details.thinking summary").click()
    expect(reply.locator(".thinking-text")).to_have_text(THINKING)
    assert "think" not in reply.locator(".content").inner_text()


def test_markup_from_the_user_or_the_model_renders_as_text(scripted_server, open_page):
    session = open_page(f"{scripted_server.url}/")
    page = session.page
    message = (
        "Hi <img src=x onerror=alert(1)> <script>alert(2)</script> **bold** and `x<b>` "
        "[a link](javascript:alert(3)) [docs](https://example.org/)\n"
        "```python\nprint('<img src=y onerror=alert(4)>')\n```"
    )
    ask(page, message)
    wait_answered(page)

    expect(page.locator(".message.user .content")).to_have_text(message)
    answer = last_answer(page).locator(".content")
    assert ECHO_PREFIX.strip() in answer.inner_text()
    assert "<img src=x onerror=alert(1)>" in answer.inner_text()
    assert page.locator("#messages img, #messages script, #messages b").count() == 0
    expect(answer.locator("strong")).to_have_text("bold")
    expect(answer.locator("p code")).to_have_text("x<b>")
    expect(answer.locator("pre code")).to_have_text("print('<img src=y onerror=alert(4)>')")
    expect(answer.locator(".code-lang")).to_have_text("python")
    assert answer.locator("a").count() == 1  # the javascript: link stays text
    expect(answer.locator("a")).to_have_attribute("href", "https://example.org/")
    expect(answer.locator("a")).to_have_attribute("rel", "noopener noreferrer nofollow")
    page.wait_for_timeout(200)
    assert session.dialogs == []
    # The link was only shown: no request went anywhere but the server.
    assert session.hosts() == {"127.0.0.1"}


def test_edit_and_resend_then_regenerate(scripted_server, open_page):
    session = open_page(f"{scripted_server.url}/")
    page = session.page
    ask(page, "first question")
    wait_answered(page)
    page.locator(".message.user .edit").click()
    page.locator(".editor textarea").fill("second question")
    page.locator(".editor .resend").click()
    wait_answered(page)
    expect(page.locator(".message")).to_have_count(2)
    expect(last_answer(page).locator(".content")).to_have_text(f"{ECHO_PREFIX}second question")

    last_answer(page).locator(".regenerate").click()
    wait_answered(page)
    expect(page.locator(".message")).to_have_count(2)
    sent = [r.post_data_json["messages"] for r in session.chat_requests()]
    assert sent == [
        [{"role": "user", "content": "first question"}],
        [{"role": "user", "content": "second question"}],
        [{"role": "user", "content": "second question"}],
    ]


def test_conversations_are_kept_in_the_browser_new_and_deleted(scripted_server, open_page):
    session = open_page(f"{scripted_server.url}/")
    page = session.page
    page.click("#toggle-settings")
    page.fill("#system-prompt", "Be brief.")
    page.click("#toggle-settings")
    ask(page, "alpha")
    wait_answered(page)
    page.click("#new-chat")
    expect(page.locator(".message")).to_have_count(0)
    ask(page, "beta")
    wait_answered(page)
    ask(page, "gamma")
    wait_answered(page)
    assert session.chat_requests()[-1].post_data_json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "beta"},
        {"role": "assistant", "content": f"{ECHO_PREFIX}beta"},
        {"role": "user", "content": "gamma"},
    ]

    page.reload()
    expect(page.locator(".conversation")).to_have_count(2)
    expect(page.locator(".conversation.active")).to_contain_text("beta")
    expect(page.locator(".message")).to_have_count(4)
    expect(page.locator("#system-prompt")).to_have_value("Be brief.")
    page.locator(".conversation", has_text="alpha").locator(".open-conversation").click()
    expect(page.locator(".message.user .content")).to_have_text("alpha")
    page.locator(".conversation", has_text="alpha").locator(".delete-conversation").click()
    expect(page.locator(".conversation")).to_have_count(1)
    page.reload()
    expect(page.locator(".conversation")).to_have_count(1)
    expect(page.locator(".conversation")).to_contain_text("beta")


def test_named_prompt_templates_come_from_the_server(scripted_server, open_page):
    session = open_page(f"{scripted_server.url}/")
    page = session.page
    page.click("#toggle-settings")
    expect(page.locator("#template option")).to_have_count(4)  # none, rag-en, rag-zh, simple-zh
    page.select_option("#template", "rag-en")
    page.locator("#template-vars textarea[data-variable=context]").fill("Paris is the capital of France.")
    page.click("#toggle-settings")
    ask(page, "capital?")
    wait_answered(page)
    body = session.chat_requests()[-1].post_data_json
    assert body["prompt_template"] == "rag-en"
    assert body["template_vars"] == {"context": "Paris is the capital of France."}
    # The server rendered the template: the engine was asked the template's question, and echoed it.
    expect(last_answer(page).locator(".content")).to_contain_text("Paris is the capital of France.")


def test_a_locked_server_serves_the_page_and_the_page_asks_for_the_key(locked_server, open_page):
    session = open_page(f"{locked_server.url}/")
    page = session.page
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()  # GET v1/models answered 401
    page.fill("#key-input", "wrong-key")
    page.click("#key-dialog button[type=submit]")
    expect(page.locator("#key-error")).to_have_text("That key was refused.")
    page.fill("#key-input", API_KEY)
    page.click("#key-dialog button[type=submit]")
    expect(dialog).to_be_hidden()

    ask(page, "think about it")
    wait_answered(page)
    reply = last_answer(page)
    expect(reply.locator(".content")).to_have_text(ANSWER)  # reasoning_content went to the thinking
    expect(reply.locator(".thinking-text")).to_have_text(THINKING)
    chat = session.chat_requests()[-1]
    assert chat.headers["authorization"] == f"Bearer {API_KEY}"
    page.reload()  # the key stays for this tab
    expect(page.locator("#model-status")).to_contain_text("scripted")
    ask(page, "again")
    wait_answered(page)
    expect(last_answer(page).locator(".content")).to_have_text(f"{ECHO_PREFIX}again")
    expect(dialog).to_be_hidden()


def test_phone_width(scripted_server, open_page):
    page = open_page(
        f"{scripted_server.url}/", viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    ).page
    ask(page, "```\n" + "x" * 300 + "\n```\nand a long line " + "word " * 60)
    wait_answered(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
    expect(page.locator("#sidebar")).to_be_hidden()
    page.click("#toggle-sidebar")
    expect(page.locator("#sidebar")).to_be_visible()
    page.locator(".open-conversation").first.click()  # picking a conversation closes the panel
    expect(page.locator("#sidebar")).to_be_hidden()
    save_screenshot(page, "phone-width")
