import json

from codi2.cli import main
from codi2.config import load_model_config
from codi2.describe import describe


def test_codi2_7b_counts_without_weights(monkeypatch):
    # no weights exist at the configured paths; describe must not touch them
    monkeypatch.setenv("CODI2_LLAMA", "/nonexistent/llama")
    d = describe(load_model_config("codi2-7b"))
    assert d.counts["llm base (frozen)"] == 6_738_415_616
    assert d.counts["lora"] == 134_217_728
    assert d.trainable["total"] == sum(v for k, v in d.trainable.items() if k != "total")
    # 4-bit < 8-bit < bf16, and bf16 of a 7B+1B model is roughly 15 GiB
    mem = list(d.memory_gib.values())
    assert mem[0] > mem[1] > mem[2]
    assert 14 < mem[0] < 17


def test_describe_cli_json(capsys):
    assert main(["describe", "tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parameters"]["lora"] > 0
    assert out["trainable"]["total"] < out["parameters"]["total"]


def test_unknown_config_key_is_a_clear_error(capsys):
    assert main(["describe", "tiny", "llm.hiden_size=3"]) == 2
    assert "hiden_size" in capsys.readouterr().err
