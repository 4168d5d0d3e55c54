"""The consistency reward (seed 000): letter extraction, the client against a live judge (a real llmhost
server on the embedded model) and a dead one, the ms-swift plugin, and `POST /v1/rewards/consistency`
(real server, plus a scripted engine for exact judge replies)."""

from __future__ import annotations

import httpx
import pytest

from llmhost.rewards import (
    ConsistencyJudge,
    JudgeConfig,
    JudgeUnavailable,
    consistency_reward,
    consistency_reward_async,
    extract_option_letter,
    split_completion,
)
from llmhost.rewards.letters import plan_item
from llmhost.rewards.swift_plugin import ConsistencyORM, config_from_env
from tests.conftest import free_port
from tests.scripted_engine import ScriptedEngine, scripted_client

QUESTION = "Which planet is known as the Red Planet? A. Venus B. Mars C. Jupiter D. Saturn"
THINKING = "The Red Planet is Mars because of iron oxide on its surface, so the answer is B."


def completion(answer: str, thinking: str = THINKING) -> str:
    return f"<think>{thinking}</think><answer>{answer}</answer>"


@pytest.mark.parametrize(
    "text, letter",
    [
        ("B", "B"),
        ("b.", "B"),
        ("a", "A"),  # the whole reply is one letter: an option, whatever its case
        ("(C)", "C"),
        ("（C）", "C"),
        ("**D**", "D"),
        ("[E]", "E"),
        ("<answer>F</answer>", "F"),
        ("Answer: B", "B"),
        ("The answer is (C).", "C"),
        ("The correct option is D because", "D"),
        ("Final answer: **G**", "G"),
        ("The answer is B. Actually, answer: C", "C"),  # the last marker wins
        ("选 E", "E"),
        ("答案是B", "B"),
        ("答案：c", "C"),
        ("选择：F", "F"),
        ("选项G正确", "G"),
        ("B. Mars", "B"),
        ("C) Jupiter", "C"),
        ("D、木星", "D"),
        ("Mars, so B", "B"),
        ("H", "H"),
        # No option, or more than one:
        ("A planet that is red", None),  # the English article
        ("the answer is a planet", None),  # lower-case "a" after a marker is the article
        ("I think so", None),
        ("B or C", None),
        ("A is wrong, it's C", None),
        ("CPU", None),
        ("Z", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_option_letter(text, letter):
    assert extract_option_letter(text) == letter


def test_split_completion():
    assert split_completion(completion("B")) == split_completion(f"{THINKING}</think><answer>B</answer>")
    parts = split_completion(completion("B"))
    assert parts.thinking == THINKING and parts.answer == "B"
    assert split_completion("<think>  </think><answer>B</answer>").thinking is None  # blank: no thinking
    assert split_completion("<think>x</think>\nB").answer == "B"  # no <answer> tags: text after </think>
    assert split_completion("just B").thinking is None


@pytest.mark.parametrize(
    "text, solution, reason",
    [
        (completion("B"), "B", None),
        (completion("B"), "<answer>B</answer>", None),
        ("<answer>B</answer>", "B", "no think block"),
        (completion("a planet"), "B", "no option letter in the answer"),
        (completion("C"), "B", "answer differs from the reference"),
        (completion("B"), "none", "no option letter in the reference solution"),
    ],
)
def test_plan_item_short_circuits(text, solution, reason):
    assert plan_item(text, solution).reason == reason


def test_config_rejects_bad_policies():
    with pytest.raises(ValueError, match="on_error"):
        JudgeConfig(on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bogus"):
        consistency_reward([completion("B")], ["B"], questions=[QUESTION], bogus=1)
    with pytest.raises(ValueError, match="same length"):
        consistency_reward([completion("B")], ["B", "C"], questions=[QUESTION])


# -- a live judge: the real server on the embedded model -------------------------------------------
BATCH = [
    (completion("B"), "B"),  # consistent: judged
    (completion("A", "Venus is closest to Earth in size, so A."), "A"),  # consistent: judged
    (completion("C"), "B"),  # differs from the reference: 0, no call
    ("<answer>B</answer>", "B"),  # no thinking: 0, no call
    (completion("the red one"), "B"),  # no letter: 0, no call
]


@pytest.mark.e2e
def test_reward_against_a_live_judge(server):
    judge = ConsistencyJudge(JudgeConfig(url=server.url))  # model: the first of GET /v1/models
    verdicts = judge.score([c for c, _ in BATCH], [s for _, s in BATCH], [QUESTION] * len(BATCH))
    assert [v.reward for v in verdicts][2:] == [0.0, 0.0, 0.0]
    assert all(v.reward in (0.0, 1.0) and v.error is None for v in verdicts)
    assert judge.stats.num_judge_calls == 2 and judge.stats.num_retries == 0
    for v in verdicts[:2]:  # the judge answered; its letter decided the reward
        assert v.judge_reply is not None and v.reason is None
        assert v.reward == (1.0 if v.judge_letter == v.policy_letter else 0.0)
    for v in verdicts[2:]:
        assert v.judge_reply is None and v.reason is not None
    assert judge._model == "smol"


@pytest.mark.e2e
async def test_async_and_batch_route_against_a_live_judge(server):
    completions, solutions = [c for c, _ in BATCH], [s for _, s in BATCH]
    rewards = await consistency_reward_async(
        completions,
        solutions,
        questions=[QUESTION] * len(BATCH),
        url=server.url,
        model="smol",
        max_concurrency=2,
    )
    assert len(rewards) == len(BATCH) and set(rewards) <= {0.0, 1.0} and rewards[2:] == [0.0] * 3
    batched = await consistency_reward_async(
        completions, solutions, questions=[QUESTION] * len(BATCH), url=server.url, route="batch"
    )
    assert set(batched) <= {0.0, 1.0} and batched[2:] == [0.0] * 3


@pytest.mark.e2e
def test_swift_orm_plugin_against_a_live_judge(server):
    orm = ConsistencyORM(url=server.url, model="smol")
    messages = [[{"role": "user", "content": QUESTION}] for _ in BATCH]
    rewards = orm([c for c, _ in BATCH], solution=[s for _, s in BATCH], messages=messages, images=None)
    assert len(rewards) == len(BATCH) and set(rewards) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="question"):
        orm([completion("B")], solution=["B"])


def test_swift_config_from_env():
    config = config_from_env(
        {
            "LLMHOST_REWARD_URL": "http://judge:9000",
            "LLMHOST_REWARD_ON_ERROR": "0",
            "LLMHOST_REWARD_MAX_RETRIES": "5",
        }
    )
    assert (config.url, config.on_error, config.max_retries) == ("http://judge:9000", 0.0, 5)
    assert config_from_env({}, url="http://x").url == "http://x"
    with pytest.raises(ValueError, match="LLMHOST_REWARD_ON_ERROR"):
        config_from_env({"LLMHOST_REWARD_ON_ERROR": "shrug"})


# -- a dead judge: the failure policy ---------------------------------------------------------------
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_dead_judge_on_error_value_gives_that_value_and_counts_retries():
    judge = ConsistencyJudge(
        JudgeConfig(url=dead_url(), model="judge", on_error=0.0, max_retries=2, backoff_s=0.01, timeout_s=2)
    )
    verdicts = judge.score([c for c, _ in BATCH], [s for _, s in BATCH], [QUESTION] * len(BATCH))
    assert [v.reward for v in verdicts] == [0.0] * len(BATCH)
    assert [v.error is not None for v in verdicts] == [True, True, False, False, False]
    assert "ConnectError" in (verdicts[0].error or "")
    assert judge.stats.num_judge_calls == 2 and judge.stats.num_failures == 2
    assert judge.stats.num_attempts == 6 and judge.stats.num_retries == 4  # 2 calls × (1 + 2 retries)


def test_dead_judge_on_error_float_is_the_reward():
    rewards = consistency_reward(
        [completion("B")],
        ["B"],
        questions=[QUESTION],
        url=dead_url(),
        model="j",
        on_error=-1.0,
        max_retries=0,
    )
    assert rewards == [-1.0]


def test_dead_judge_raise_raises():
    with pytest.raises(JudgeUnavailable, match="after 2 attempt"):
        consistency_reward(
            [completion("B")],
            ["B"],
            questions=[QUESTION],
            url=dead_url(),
            model="j",
            max_retries=1,
            backoff_s=0.01,
        )


def test_dead_judge_without_a_model_name_fails_by_the_policy_too():
    judge = ConsistencyJudge(JudgeConfig(url=dead_url(), on_error=0.0, max_retries=0))
    assert [v.reward for v in judge.score([completion("B")], ["B"], [QUESTION])] == [0.0]
    assert "/v1/models" in (judge.score([completion("B")], ["B"], [QUESTION])[0].error or "")


def test_no_judge_call_when_every_item_short_circuits():
    judge = ConsistencyJudge(JudgeConfig(url=dead_url(), model="j"))  # would raise if called
    verdicts = judge.score([completion("C"), "B"], ["B", "B"], [QUESTION, QUESTION])
    assert [v.reward for v in verdicts] == [0.0, 0.0] and judge.stats.num_attempts == 0


def test_retries_503_with_retry_after_then_succeeds():
    """A judge that is busy twice, then answers: retried (Retry-After honoured), then scored."""
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        if len(seen) <= 2:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": {"message": "loading"}})
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": " B\n"}}]})

    judge = ConsistencyJudge(JudgeConfig(model="j", max_retries=3), transport=httpx.MockTransport(handler))
    [verdict] = judge.score([completion("B")], ["B"], [QUESTION])
    assert verdict.reward == 1.0 and verdict.judge_letter == "B"
    assert judge.stats.num_retries == 2 and judge.stats.num_attempts == 3


def test_a_4xx_is_not_retried():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "bad key"}})

    judge = ConsistencyJudge(JudgeConfig(model="j", on_error=0.0), transport=httpx.MockTransport(handler))
    [verdict] = judge.score([completion("B")], ["B"], [QUESTION])
    assert verdict.reward == 0.0 and "bad key" in (verdict.error or "")
    assert judge.stats.num_attempts == 1


async def test_sync_function_works_inside_a_running_loop():
    # A notebook or async trainer calls the sync function with a loop running: it must not deadlock.
    assert consistency_reward(["no think"], ["B"], questions=[QUESTION], url=dead_url()) == [0.0]


# -- the server route ---------------------------------------------------------------------------------
def items(batch=BATCH) -> list[dict]:
    return [{"question": QUESTION, "completion": c, "solution": s} for c, s in batch]


@pytest.mark.e2e
def test_route_on_a_real_server(server):
    r = httpx.post(f"{server.url}/v1/rewards/consistency", json={"items": items()}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["rewards"]) == len(body["judge_letters"]) == len(body["policy_letters"]) == len(BATCH)
    assert set(body["rewards"]) <= {0.0, 1.0} and body["rewards"][2:] == [0.0] * 3
    assert body["policy_letters"] == ["B", "A", "C", "B", None]
    assert body["judge_letters"][2:] == [None] * 3 and body["num_judged"] == 2
    assert all(isinstance(reply, str) for reply in body["judge_replies"][:2])


@pytest.mark.e2e
@pytest.mark.parametrize(
    "payload, param",
    [
        ({"items": []}, "items"),
        ({}, "items"),
        ({"items": [{"question": QUESTION, "completion": "x"}]}, "items.0.solution"),
        ({"items": [{"question": QUESTION, "completion": 3, "solution": "B"}]}, "items.0.completion"),
        ({"items": items(), "max_tokens": 0}, "max_tokens"),
    ],
)
def test_route_bad_input_is_a_400_in_the_openai_shape(server, payload, param):
    r = httpx.post(f"{server.url}/v1/rewards/consistency", json=payload, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


async def test_route_submits_the_judge_prompts_together_and_reads_the_letters():
    engine = ScriptedEngine()
    engine.queue(["Answer: ", "B"], ["C"])  # the two judged items, in order
    async with scripted_client(engine) as client:
        r = await client.post("/v1/rewards/consistency", json={"items": items()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rewards"] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert body["judge_letters"] == ["B", "C", None, None, None]
    assert body["reasons"][2:] == [
        "answer differs from the reference",
        "no think block",
        "no option letter in the answer",
    ]
    assert len(engine.calls) == 2  # short-circuited items never reach the engine
    first = engine.calls[0]
    assert THINKING in first.prompt_text and "<answer>" not in first.prompt_text  # the thinking only
    assert "professional question-answering assistant" in first.prompt_text
    assert first.params.temperature == pytest.approx(0.1) and first.params.max_tokens == 10


async def test_route_context_overflow_names_the_item():
    engine = ScriptedEngine(max_model_len=600)
    long = completion("B", "x" * 700)
    async with scripted_client(engine) as client:
        r = await client.post(
            "/v1/rewards/consistency", json={"items": items([(completion("B"), "B"), (long, "B")])}
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert "item(s) 1 " in r.json()["error"]["message"] and not engine.calls


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("<think>Mars is red, so B.</think>\nB", "B"),
        ("<think>Mars is red, so the answer is B", None),  # cut inside its thinking: no option named
        ("so B.</think> C", "C"),  # the template opened the think block
    ],
)
def test_a_reasoning_judge_is_read_after_its_thinking(reply, letter):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": reply}}]})

    judge = ConsistencyJudge(JudgeConfig(model="j"), transport=httpx.MockTransport(handler))
    [verdict] = judge.score([completion("B")], ["B"], [QUESTION])
    assert verdict.judge_letter == letter and verdict.reward == (1.0 if letter == "B" else 0.0)
