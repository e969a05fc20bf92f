"""Chat examples come from the model folder (``<model>/examples/examples.json``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve.examples import ExamplesError, load_examples

BUNDLE = Path(__file__).resolve().parent.parent / "checkpoints" / "codi2-mini"


def test_world_examples_round_trip_through_a_model_folder(tmp_path):
    from data_builders.world.examples import write_examples

    write_examples(tmp_path / "examples")
    ex = load_examples(tmp_path)
    assert len(ex) == 6 and all(Path(f).is_file() for e in ex for f in e.files)
    icl = next(e for e in ex if len(e.files) == 3)
    assert icl.icon in icl.files and icl.to_gradio()["display_text"].startswith("🧩")
    assert load_examples(tmp_path / "elsewhere") == [] and load_examples(None) == []


def test_the_bundle_ships_its_examples():
    ex = load_examples(BUNDLE)
    assert [e.text for e in ex][0] == "Draw a large red circle on the left."
    assert sum(len(e.files) for e in ex) == 6


@pytest.mark.parametrize("content, match", [
    ("{", "not valid JSON"),
    (json.dumps({"schema": 2, "examples": []}), "schema"),
    (json.dumps({"schema": 1, "examples": [{"text": ""}]}), r"examples\[0\] needs a non-empty"),
    (json.dumps({"schema": 1, "examples": [{"text": "hi", "files": ["gone.png"]}]}), "not there: .*gone.png"),
])
def test_a_bad_examples_file_is_named(tmp_path, content, match):
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "examples.json").write_text(content)
    with pytest.raises(ExamplesError, match=match):
        load_examples(tmp_path)
