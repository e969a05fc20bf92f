"""Every example card of the chat app gets a right reply from the bundled mini model, judged by its world judges.

The cards are driven through :class:`codi2.chat_state.ChatState` exactly as the app's chat handler does: the card's
text and files go to ``submit`` (uploads first, then the words: the in-context card is every image first, then one
sentence), with the options the app's settings give by default (the model's temperature, every output modality
allowed, no prefix), except a fixed seed so that the diffusion noise is the same on every run. Each card runs in a
fresh session, as when a new user clicks it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "checkpoints" / "codi2-mini"

pytestmark = [pytest.mark.skipif(not (BUNDLE / "config.yaml").is_file(), reason="checkpoints/codi2-mini not built"),
              pytest.mark.usefixtures("one_thread")]


def _trained_on_words() -> bool:
    """Whether the bundle had the request-grammar stages (scripts/train_mini.sh stage 11 on) in its recipe."""
    import json

    try:
        return "stage11" in json.loads((BUNDLE / "recipe.json").read_text()).get("stages", {})
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def mini():
    from codi2.pipeline import CoDi2Pipeline

    return CoDi2Pipeline.from_pretrained(BUNDLE, device="cpu")


def _judge(judges, kind: str, path: Path) -> dict:
    from codi2.media import load_media

    media = load_media(path, kind=kind)
    return {"image": judges.score_image, "audio": judges.score_audio, "video": judges.score_video}[kind](media)


def _found(pred: dict, want: dict) -> dict:
    return {a: (v[0] if isinstance(v, tuple) else v) for a, v in pred.items() if a in want}


@pytest.mark.xfail(not _trained_on_words(), strict=True,
                   reason="the bundle predates the request-grammar stages: its in-context card gets a sound (issue 43); "
                          "the stages 11-14 candidate passed this test but was not bundled (templates regressed)")
def test_every_example_card_gets_a_right_reply(mini, tmp_path):
    from codi2.chat_state import ServeConfig, SessionManager, TurnFailed, sampling_options
    from codi2.generation import TurnDone
    from data_builders.world.examples import EXPECTED
    from data_builders.world.judges import Judges
    from data_builders.world.world import parse_caption
    from serve.examples import load_examples

    cards = load_examples(BUNDLE)
    assert len(cards) == len(EXPECTED), "examples.py's EXPECTED must list one right reply per card"
    judges = Judges.load(BUNDLE / "judges")
    cfg = ServeConfig()
    gen = mini.config.generation
    outputs = [m.value for m in mini.model.n_out if mini.model.n_out[m] > 0]
    manager = SessionManager(mini, cfg, tmp_path / "serve")
    wrong = []
    try:
        for i, (card, want) in enumerate(zip(cards, EXPECTED)):
            opts = sampling_options(cfg, temperature=float(gen.temperature), top_p=float(gen.top_p),
                                    max_new_tokens=min(gen.max_new_tokens, cfg.max_new_tokens), seed=0, outputs=outputs,
                                    prefix="")
            state = manager.get(f"card{i}")
            events = list(state.submit(card.text, card.files, opts))
            assert not any(isinstance(e, TurnFailed) for e in events), f"card {i}: {events[-1]}"
            assert isinstance(events[-1], TurnDone)
            reply = state.log[-1].reply
            text = " ".join(p.text for p in reply.content if p.type == "text" and p.text)
            got: dict[str, dict] = {}
            for kind, attrs in want.items():
                if kind == "text":
                    got[kind] = _found(parse_caption(text), attrs)
                else:
                    paths = [p.path for p in reply.content if p.type == kind]
                    got[kind] = _found(_judge(judges, kind, Path(paths[0])), attrs) if paths else {}
            made = sorted({p.type for p in reply.content if p.type != "text"})
            if got != want or made != sorted(k for k in want if k != "text"):
                wrong.append(f"card {i} {card.text!r}: reply {text!r} with {made}, judged {got}, want {want}")
    finally:
        manager.close()
    assert not wrong, "\n".join(wrong)
