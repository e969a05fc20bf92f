import dataclasses

import pytest
import torch

from codi2.config import GenerationConfig
from codi2.conversation import Message, Part
from codi2.generation import (Cancelled, ChatSession, MediaDone, MediaStarted, SamplingOptions,
                              TextDelta, Turn, TurnDone, sample_next)
from codi2.modality import Modality

from .conftest import make_audio, make_image, make_video

GREEDY = SamplingOptions(decode=False, temperature=0.0, max_new_tokens=12)


def _turns():
    return [
        Message("user", [Part("image", media=make_image(0)), Part("audio", media=make_audio(0)),
                         Part("video", media=make_video(0)), Part.from_text("What is this?")]),
        Message("user", [Part("image", media=make_image(1)), Part.from_text("And this one")]),
        Message("user", "Describe both again."),
    ]


def test_cached_and_uncached_sessions_agree_over_three_turns(tiny_model):
    cached, uncached = ChatSession(tiny_model), ChatSession(tiny_model, use_cache=False)
    for msg in _turns():
        a = cached.send(msg, GREEDY)
        b = uncached.send(msg, GREEDY)
        assert a.to_dict() == b.to_dict()
    assert cached._ids == uncached._ids
    assert cached._cache.get_seq_length() == len(cached._ids)


def test_a_new_turn_feeds_only_its_own_tokens(tiny_model, monkeypatch):
    s = ChatSession(tiny_model)
    s.send(_turns()[0], GREEDY)
    before = s.num_tokens
    piece = tiny_model.builder.encode_turn(s.history, _turns()[2])
    fed = []
    orig = tiny_model.llm.forward
    monkeypatch.setattr(tiny_model.llm, "forward", lambda inputs_embeds, **kw: fed.append(inputs_embeds.shape[1])
                        or orig(inputs_embeds=inputs_embeds, **kw))
    done = [e for e in s.stream(_turns()[2], GREEDY) if isinstance(e, TurnDone)][0]
    # the prefill holds the previous reply's end token + this turn's prompt, not the history
    assert fed[0] == 1 + len(piece.ids) < before
    assert all(n == 1 for n in fed[1:])  # then one token per step
    assert done.new_tokens == sum(fed) == s.num_tokens - before


def test_media_features_are_encoded_once_per_content(tiny_model, monkeypatch):
    s = ChatSession(tiny_model)
    calls = []
    orig = tiny_model.encoder.encode_image
    monkeypatch.setattr(tiny_model.encoder, "encode_image", lambda x: calls.append(x.shape[0]) or orig(x))
    img = make_image(7)
    s.send(Message("user", [Part("image", media=img), Part.from_text("a")]), GREEDY)
    s.send(Message("user", [Part("image", media=make_image(7)), Part.from_text("same again")]), GREEDY)
    assert calls == [1]


def test_prefix_opens_media_and_slots_run_in_one_pass(tiny_model):
    s = ChatSession(tiny_model)
    opts = dataclasses.replace(GREEDY, prefix="Here <img> and <aud> and <vid>", max_new_tokens=30)
    events = list(s.stream("Show me everything.", opts))
    started = [e.modality for e in events if isinstance(e, MediaStarted)]
    assert started[:3] == [Modality.IMAGE, Modality.AUDIO, Modality.VIDEO]
    done = [e for e in events if isinstance(e, MediaDone)]
    assert done[0].conditioning["image_embeds"].shape == (1, 16)
    assert done[1].conditioning["generated_prompt_embeds"].shape == (1, 8, 16)
    assert done[2].conditioning["prompt_embeds"].shape == (1, 16, 16)
    reply = events[-1].message
    assert [p.type for p in reply.content][:4] == ["text", "image", "text", "audio"]
    # the slots + closing token went through the LLM and are in the session's tokens
    b = tiny_model.builder
    i = s._ids.index(b.ids["<img>"])
    assert s._ids[i + 1:i + 4] == b.output_span_ids(Modality.IMAGE)
    # one forward pass per span: slots computed in one pass equal slots fed one by one
    s2 = ChatSession(tiny_model, slots_in_one_pass=False)
    done2 = [e for e in s2.stream("Show me everything.", opts) if isinstance(e, MediaDone)]
    for x, y in zip(done, done2):
        for k in x.conditioning:
            assert torch.allclose(x.conditioning[k], y.conditioning[k], atol=1e-5)


def test_allowed_outputs_and_bad_prefix(tiny_model):
    s = ChatSession(tiny_model)
    with pytest.raises(ValueError, match="IMG_OUT_0"):
        s.send("x", dataclasses.replace(GREEDY, prefix="[IMG_OUT_0]"))
    assert s.num_tokens == 0 and s.history == []  # the failed turn was rolled back
    logits = torch.zeros(tiny_model.llm.vocab_size)
    logits[tiny_model.builder.ids["<img>"]] = 100.0
    gen = torch.Generator().manual_seed(0)
    assert sample_next(logits, 0.0, 1.0, 0, gen) == tiny_model.builder.ids["<img>"]


def test_undo_and_regenerate_restore_the_cache(tiny_model):
    s = ChatSession(tiny_model)
    t = _turns()
    s.send(t[0], GREEDY)
    n1 = s.num_tokens
    r2 = s.send(t[1], GREEDY)
    r2b = [e for e in s.regenerate(GREEDY) if isinstance(e, TurnDone)][0].message
    assert r2b.to_dict() == r2.to_dict() and len(s.history) == 4
    undone = s.undo()
    assert undone.user is t[1]
    assert s.num_tokens == n1 and len(s.history) == 2
    assert s._cache.get_seq_length() == n1
    with pytest.raises(ValueError, match="nothing to regenerate"):
        ChatSession(tiny_model).regenerate()


def test_keep_last_and_restore_re_encode_the_kept_turns(tiny_model):
    s = ChatSession(tiny_model)
    for msg in [Message("user", f"turn {i}, say something") for i in range(3)]:
        s.send(msg, GREEDY)
    turns = list(s.turns)
    assert s.keep_last(5) == 0 and s.turns == turns
    assert s.keep_last(2) == 1 and s.turns == turns[1:] and [t.start for t in s.turns][0] == 0
    fresh = ChatSession(tiny_model)
    fresh.restore([Turn(t.user, t.reply) for t in turns[1:]])
    assert fresh.history == s.history and fresh.num_tokens == s.num_tokens
    assert [t.start for t in fresh.turns] == [t.start for t in s.turns]
    assert fresh.send("and now?", GREEDY).to_dict() == s.send("and now?", GREEDY).to_dict()


def test_cancel_rolls_back_the_turn(tiny_model):
    s = ChatSession(tiny_model)
    s.send(_turns()[0], GREEDY)
    n, hist = s.num_tokens, len(s.history)
    events = []
    for ev in s.stream("tell me more", dataclasses.replace(GREEDY, prefix="well then you see", max_new_tokens=20)):
        events.append(ev)
        if isinstance(ev, TextDelta):
            s.cancel()
    assert isinstance(events[-1], Cancelled)
    assert s.num_tokens == n and len(s.history) == hist
    s.cancel()  # a stale stop request does not cancel the next turn
    s.send("x", GREEDY)
    assert s.num_tokens > n and len(s.history) == hist + 2


def test_context_overflow_drops_oldest_turns(tiny_model):
    cfg = GenerationConfig(max_new_tokens=8, max_context=130)
    s = ChatSession(tiny_model, config=cfg)
    truncated = []
    for msg in [Message("user", f"turn number {i} please say something") for i in range(6)]:
        done = [e for e in s.stream(msg, dataclasses.replace(GREEDY, max_new_tokens=8)) if isinstance(e, TurnDone)][0]
        truncated.append(done.truncated_turns)
        assert s.num_tokens <= 130
        assert s._cache.get_seq_length() == s.num_tokens
    assert sum(truncated) > 0
    assert len(s.history) < 12
    with pytest.raises(ValueError, match="context"):
        s.send(Message("user", "word " * 400), GREEDY)
