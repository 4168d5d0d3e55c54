import pytest
from pydantic import ValidationError

from llmhost.config import Settings
from llmhost.config_file import ConfigFileError, describe_problems


def test_defaults_bind_loopback_port_8000():
    s = Settings.load()
    assert (s.host, s.port, s.max_num_seqs) == ("127.0.0.1", 8000, 8)


def test_precedence_cli_over_env_over_yaml(tmp_path, monkeypatch):
    cfg = tmp_path / "llmhost.yaml"
    cfg.write_text("port: 9001\nmax_num_seqs: 3\nthreads: 1\nserved_model_name: [a, b]\n")
    monkeypatch.setenv("LLMHOST_MAX_NUM_SEQS", "5")
    monkeypatch.setenv("LLMHOST_THREADS", "2")
    s = Settings.load(cfg, threads=4)
    assert s.port == 9001  # yaml
    assert s.max_num_seqs == 5  # env beats yaml
    assert s.threads == 4  # cli beats env
    assert s.served_model_name == ["a", "b"]


def test_served_model_name_splits_commas(monkeypatch):
    monkeypatch.setenv("LLMHOST_SERVED_MODEL_NAME", "x, y")
    assert Settings.load().served_model_name == ["x", "y"]
    assert Settings.load(served_model_name=["p,q", "r"]).served_model_name == ["p", "q", "r"]


def test_bad_values_and_unknown_keys_are_rejected(tmp_path):
    with pytest.raises(ValidationError):
        Settings.load(max_num_seqs=0)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("no_such_setting: 1\n")
    with pytest.raises(ValidationError):
        Settings.load(cfg)
    with pytest.raises(FileNotFoundError):
        Settings.load(tmp_path / "missing.yaml")


def test_a_batch_smaller_than_the_running_sequences_is_refused_naming_both_flags():
    # 32 sequences decoding one token each cannot fit a 16-token step: this used to abort the server
    # (GGML_ASSERT n_outputs_max) under 32 concurrent requests, losing every one of them.
    with pytest.raises(ValidationError) as err:
        Settings.load(max_num_seqs=32, max_num_batched_tokens=16)
    assert "--max-num-batched-tokens (16)" in str(err.value) and "--max-num-seqs (32)" in str(err.value)
    assert Settings.load(max_num_seqs=32, max_num_batched_tokens=32).max_num_batched_tokens == 32


def test_prefix_caching_is_on_by_default_and_can_be_turned_off(monkeypatch):
    assert Settings.load().enable_prefix_caching is True
    monkeypatch.setenv("LLMHOST_ENABLE_PREFIX_CACHING", "false")
    assert Settings.load().enable_prefix_caching is False


def problems(config=None, **flags) -> list[str]:
    with pytest.raises(ValidationError) as err:
        Settings.load(config, **flags)
    return describe_problems(err.value, flags=flags, config_file=config)


def test_problems_are_one_line_each_naming_the_flag_variable_or_key(tmp_path, monkeypatch):
    cfg = tmp_path / "llmhost.yaml"
    cfg.write_text("max_num_seqs: 0\nenable_prefix_cache: false\n")
    monkeypatch.setenv("LLMHOST_MAX_N", "1000")
    assert problems(cfg, reasoning_parser="granite") == [
        f"invalid max_num_seqs 0 (from {cfg}): input should be greater than or equal to 1",
        "invalid max_n '1000' (from LLMHOST_MAX_N): input should be less than or equal to 128",
        "invalid reasoning_parser 'granite' (from --reasoning-parser): input should be 'qwen3' or "
        "'deepseek_r1'",
        f"unknown key enable_prefix_cache in {cfg}: did you mean enable_prefix_caching?",
    ]
    monkeypatch.delenv("LLMHOST_MAX_N")
    assert problems(max_num_seqs=32, max_num_batched_tokens=16) == [
        "invalid settings: --max-num-batched-tokens (16) must be at least --max-num-seqs (32): each running "
        "sequence decodes one token per step"
    ]


def test_a_config_file_that_is_not_a_mapping_is_refused_naming_it(tmp_path):
    cfg = tmp_path / "llmhost.yaml"
    cfg.write_text("just a string\n")
    with pytest.raises(ConfigFileError, match=f"config file {cfg} must be a mapping"):
        Settings.load(cfg)
    cfg.write_text("")
    assert Settings.load(cfg).port == 8000  # an empty file is no settings
