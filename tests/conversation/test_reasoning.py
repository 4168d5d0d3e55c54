from llmhost.conversation.reasoning import strip_thinking


def test_strip_closed_block():
    assert strip_thinking("<think>\nhmm, 2+2\n</think>\n\nThe answer is 4.") == "The answer is 4."


def test_strip_block_opened_in_the_prompt():
    assert strip_thinking("reasoning here</think>\n\nParis") == "Paris"


def test_strip_unclosed_block_cut_by_max_tokens():
    assert strip_thinking("Sure. <think>let me see") == "Sure."


def test_only_thinking_returns_the_thinking():
    assert strip_thinking("<think>just thoughts</think>") == "just thoughts"


def test_no_thinking_is_unchanged_but_trimmed():
    assert strip_thinking("  plain answer ") == "plain answer"
