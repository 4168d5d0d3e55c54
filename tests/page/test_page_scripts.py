"""The page's pure script functions, run in the real Chromium: the Markdown renderer (model output is
untrusted: markup must come out as text) and the split of raw `<think>` blocks."""

from __future__ import annotations

import pytest

from tests.page.conftest import chromium_skip_reason

if (_reason := chromium_skip_reason()) is not None:
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scripts(browser, scripted_server):
    """A page of the scripted server, with `render(markdown) -> html` and `split(raw)` callable."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{scripted_server.url}/page/markdown.js")  # same origin, no app running

    def render(markdown: str) -> str:
        return page.evaluate(
            """async (source) => {
                const {renderMarkdown} = await import('/page/markdown.js');
                const box = document.createElement('div');
                box.append(renderMarkdown(source));
                return box.innerHTML;
            }""",
            markdown,
        )

    def split(raw: str) -> dict:
        return page.evaluate("async (raw) => (await import('/page/stream.js')).splitThinking(raw)", raw)

    yield render, split
    context.close()


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        ("plain", "<p>plain</p>"),
        ("one\ntwo\n\nthree", "<p>one<br>two</p><p>three</p>"),
        ("# Title\n## Sub #", "<h1>Title</h1><h2>Sub</h2>"),
        (
            "**b** *i* _i_ ~~s~~ `c`",
            "<p><strong>b</strong> <em>i</em> <em>i</em> <del>s</del> <code>c</code></p>",
        ),
        ("snake_case_name and 2*3*4", "<p>snake_case_name and 2<em>3</em>4</p>"),
        ("**bold *and italic***", "<p><strong>bold <em>and italic</em></strong></p>"),
        (r"\*not italic\*", "<p>*not italic*</p>"),
        ("- a\n- b\n  - c\n- d", "<ul><li>a</li><li><p>b</p><ul><li>c</li></ul></li><li>d</li></ul>"),
        ("3. x\n4. y", '<ol start="3"><li>x</li><li>y</li></ol>'),
        ("> quoted\n> on", "<blockquote><p>quoted<br>on</p></blockquote>"),
        ("---", "<hr>"),
        (
            "| a | b |\n|---|:-:|\n| 1 | **2** |",
            '<div class="table-wrap"><table><thead><tr><th>a</th><th>b</th></tr></thead>'
            "<tbody><tr><td>1</td><td><strong>2</strong></td></tr></tbody></table></div>",
        ),
        ("<b>not bold</b> & <i>", "<p>&lt;b&gt;not bold&lt;/b&gt; &amp; &lt;i&gt;</p>"),
        ("<img src=x onerror=alert(1)>", "<p>&lt;img src=x onerror=alert(1)&gt;</p>"),
        (
            "[x](javascript:alert(1)) [y](data:text/html,x)",
            "<p>[x](javascript:alert(1)) [y](data:text/html,x)</p>",
        ),
        ("`<script>`", "<p><code>&lt;script&gt;</code></p>"),
        ('[**docs**](https://example.org/a?b=1&c=2 "t")', None),
        ("see https://example.org/x.", None),
        ("![cat](https://example.org/cat.png)", None),
    ],
)
def test_markdown(scripts, markdown, html):
    render, _ = scripts
    out = render(markdown)
    if html is not None:
        assert out == html
    else:
        assert "<img" not in out and out.count("<a ") == 1
        assert 'rel="noopener noreferrer nofollow"' in out and 'target="_blank"' in out
        assert 'href="https://example.org/' in out


def test_code_blocks(scripts):
    render, _ = scripts
    out = render("```python\nif a < b:\n    print('<i>')\n```\nafter")
    assert '<span class="code-lang">python</span>' in out
    assert "<pre><code>if a &lt; b:\n    print('&lt;i&gt;')</code></pre>" in out
    assert out.endswith("<p>after</p>")
    # Mid-stream the fence is not closed yet: the rest is code, not Markdown.
    assert "<pre><code>x = 1\n**not bold**</code></pre>" in render("```\nx = 1\n**not bold**")
    assert "<pre><code>indented\ncode</code></pre>" in render("    indented\n    code")


@pytest.mark.parametrize(
    ("raw", "thinking", "answer", "is_thinking"),
    [
        ("Hello", "", "Hello", False),
        ("<think>Hmm, let me see", "Hmm, let me see", "", True),
        ("<think>Hmm</thi", "Hmm", "", True),  # half a closing tag is not shown
        ("<thi", "", "", False),  # may become a tag
        ("\n<think>\nHmm\n</think>\n\nParis.", "Hmm", "Paris.", False),
        ("Hmm</think>Paris.", "Hmm", "Paris.", False),  # the template opened the block in the prompt
        ("Paris. <think> is a tag", "", "Paris. <think> is a tag", False),
    ],
)
def test_split_thinking(scripts, raw, thinking, answer, is_thinking):
    _, split = scripts
    assert split(raw) == {"thinking": thinking, "answer": answer, "isThinking": is_thinking}
