"""Rewards for RL training that use a served model as the judge (seed 000, CONTRACTS.md §2)."""

from llmhost.rewards.consistency import (
    ConsistencyJudge,
    JudgeConfig,
    JudgeStats,
    JudgeUnavailable,
    Verdict,
    consistency_reward,
    consistency_reward_async,
)
from llmhost.rewards.letters import extract_option_letter, split_completion

__all__ = [
    "ConsistencyJudge",
    "JudgeConfig",
    "JudgeStats",
    "JudgeUnavailable",
    "Verdict",
    "consistency_reward",
    "consistency_reward_async",
    "extract_option_letter",
    "split_completion",
]
