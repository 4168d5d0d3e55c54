import json

import pytest

from llmhost.conversation.template import CHATML_TEMPLATE, ChatTemplate
from llmhost.errors import TemplateError

# SmolLM2-Instruct's template, as shipped in its GGUF metadata.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_smollm2_renders_default_system_and_generation_prompt():
    t = ChatTemplate(SMOLLM2)
    out = t.render([{"role": "user", "content": "Hi"}])
    assert out == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_kwargs_reach_the_template():
    t = ChatTemplate(
        "{% if enable_thinking is defined and not enable_thinking %}NOTHINK{% endif %}"
        "{{ messages[0]['content'] }}"
    )
    assert t.render([{"role": "user", "content": "x"}], enable_thinking=False) == "NOTHINKx"
    assert t.render([{"role": "user", "content": "x"}]) == "x"


def test_raise_exception_becomes_a_template_error():
    t = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(TemplateError, match="roles must alternate"):
        t.render([{"role": "user", "content": "x"}])


def test_sandbox_blocks_python_internals():
    t = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError):
        t.render([{"role": "user", "content": "x"}])


def test_tojson_keeps_unicode_like_transformers():
    t = ChatTemplate("{{ tools | tojson }}")
    out = t.render([], tools=[{"name": "天气"}])
    assert json.loads(out) == [{"name": "天气"}] and "天气" in out


def test_reads_hf_folder_template_list_form(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": [
                    {"name": "default", "template": CHATML_TEMPLATE},
                    {"name": "tool_use", "template": "T"},
                ],
                "eos_token": {"content": "<|im_end|>"},
                "bos_token": None,
            }
        )
    )
    t = ChatTemplate.from_model_folder(tmp_path)
    assert t is not None and t.eos_token == "<|im_end|>" and t.bos_token == ""
    assert t.render([{"role": "user", "content": "a"}]).endswith("<|im_start|>assistant\n")
    (tmp_path / "chat_template.jinja").write_text("J{{ messages|length }}")
    assert ChatTemplate.from_model_folder(tmp_path).render([{"role": "user", "content": "a"}]) == "J1"


def test_missing_template_falls_back_to_chatml():
    t = ChatTemplate.for_engine(None, bos_token="", eos_token="")
    assert t.source == CHATML_TEMPLATE


def test_a_client_value_the_template_cannot_use_is_a_template_error_not_a_crash():
    """`chat_template_kwargs` reach the template as variables; a `tools` there that is not a list of
    functions used to raise a TypeError before the template ran (a 500 on the server)."""
    from llmhost.conversation.template import ChatTemplate
    from llmhost.errors import TemplateError

    template = ChatTemplate.for_engine(
        "{% for m in messages %}{{ m['content'] }}{% endfor %}", bos_token="", eos_token=""
    )
    with pytest.raises(TemplateError):
        template.render([{"role": "user", "content": "hi"}], tools=5)
