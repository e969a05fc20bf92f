"""codi2.chat_state without any UI: limits, media registry, context trimming, failures, sessions, export.

The random tiny model never opens a media span itself; ``SamplingOptions(prefix="Here <img>")``
forces an image into the reply where a test needs one.
"""
from __future__ import annotations

import json
import threading
import zipfile

import pytest

from codi2.chat_state import ChatInputError, ChatSettings, ServeConfig, SessionManager, TurnFailed, sampling_options
from codi2.config import MediaLimits
from codi2.generation import Cancelled, SamplingOptions, TurnDone
from codi2.media import save_audio, save_image

from .conftest import make_audio, make_image

IMG = SamplingOptions(prefix="Here <img>", seed=0)
TEXT = SamplingOptions(seed=0, max_new_tokens=4)


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    from codi2.pipeline import CoDi2Pipeline

    return CoDi2Pipeline.from_pretrained(tiny_pipeline_dir)


@pytest.fixture
def manager(pipe, tmp_path):
    m = SessionManager(pipe, ServeConfig(max_turns=2, max_log_turns=3, max_sessions=2), tmp_path / "serve")
    yield m
    m.close()


def _last(events) -> object:
    evs = list(events)
    return evs[-1]


def test_prepare_orders_parts_and_checks_limits(manager, tmp_path):
    st = manager.get("a")
    img = save_image(make_image(0), tmp_path / "cat.png")
    aud = save_audio(make_audio(0, 0.5), tmp_path / "purr.wav")
    msg = st.prepare("what is this?", [str(img), str(aud)])
    assert [p.type for p in msg.content] == ["image", "audio", "text"]
    assert all(p.path.startswith(str(st.workdir)) for p in msg.media_parts)  # copied into the session folder
    with pytest.raises(ChatInputError, match="over the limit of 2000"):
        st.prepare("x" * 2001)
    with pytest.raises(ChatInputError, match="over the limit of 8"):
        st.prepare("many", [str(img)] * 9)
    with pytest.raises(ChatInputError, match="empty"):
        st.prepare("   ")
    with pytest.raises(ChatInputError, match="no media @1"):
        st.prepare("make @1 blue")


def test_media_registry_references_and_undo(manager, tmp_path):
    st = manager.get("a")
    img = save_image(make_image(0), tmp_path / "cat.png")
    done = _last(st.submit("draw it", [str(img)], IMG))
    assert isinstance(done, TurnDone)
    assert [it.label for it in st.media] == ["@1 image · you, turn 1", "@2 image · codi2, turn 1"]
    msg = st.prepare("make @2 blue and keep @1")
    assert [p.type for p in msg.content] == ["text", "image", "text", "image"]
    assert msg.content[1].path == str(st.item(2).path)
    assert isinstance(_last(st.submit("make @2 blue", options=IMG)), TurnDone)
    assert st.session.turns[1].user.content[1].path == str(st.item(2).path)  # fed again as an input
    out3 = st.item(3).path
    assert st.undo() and st.turns_done == 1 and len(st.session.turns) == 1
    assert [it.number for it in st.media] == [1, 2] and not out3.exists()


def test_context_and_log_are_trimmed(manager, tmp_path):
    st = manager.get("a")
    img = save_image(make_image(0), tmp_path / "cat.png")
    assert isinstance(_last(st.submit("first", [str(img)], IMG)), TurnDone)
    first_files = [it.path for it in st.media]
    for i in range(4):
        assert isinstance(_last(st.submit(f"turn {i}", options=TEXT)), TurnDone)
    assert len(st.session.turns) == 2  # max_turns
    assert [t.number for t in st.log] == [3, 4, 5]  # max_log_turns
    assert st.media == [] and not any(p.exists() for p in first_files)  # turn 1's media went with it
    assert len(st.session.feature_cache) == 0  # no kept turn has an input media
    assert isinstance(_last(st.submit("still fine", options=TEXT)), TurnDone)


def test_failure_inside_generation_keeps_history(manager, monkeypatch):
    st = manager.get("a")
    assert isinstance(_last(st.submit("hello", options=TEXT)), TurnDone)

    def boom(*args, **kwargs):
        raise RuntimeError("decoder exploded")
        yield  # a generator, like ChatSession._decode

    monkeypatch.setattr(st.session, "_decode", boom)
    ev = _last(st.submit("draw", options=IMG))
    assert isinstance(ev, TurnFailed) and "RuntimeError: decoder exploded" in ev.message
    assert len(st.session.turns) == 1 and len(st.log) == 1 and st.notices[-1].text == ev.message
    # regenerate failing the same way restores the previous reply
    ev = _last(st.regenerate(IMG))
    assert isinstance(ev, TurnFailed) and len(st.session.turns) == 1 and st.log[-1].user.text == "hello"
    monkeypatch.undo()
    assert isinstance(_last(st.submit("again", options=TEXT)), TurnDone) and len(st.session.turns) == 2


def test_cancel_while_waiting_for_the_model(manager):
    st = manager.get("a")
    events: list = []
    with manager.model_lock:  # another session is generating
        th = threading.Thread(target=lambda: events.extend(st.submit("hi", options=TEXT)))
        th.start()
        while st.live is None:
            th.join(0.01)
        st.cancel()
        th.join(10)
    assert isinstance(events[-1], Cancelled) and st.notices[-1].text == "Stopped." and st.session.turns == []
    ev = _last(st.regenerate(TEXT))
    assert isinstance(ev, TurnFailed) and "nothing to regenerate" in ev.message


def test_sessions_are_isolated_and_bounded(manager):
    a, b = manager.get("a"), manager.get("b")
    assert a is not b and a.session is not b.session and a.session.model is b.session.model
    _last(a.submit("only in a", options=TEXT))
    assert b.log == [] and len(a.log) == 1
    a_dir = a.workdir
    manager.get("c")  # max_sessions=2: the least recently used idle session (a) goes
    assert "a" not in manager and "b" in manager and not a_dir.exists()
    for key in ("b", "c"):
        manager.get(key)._busy = True
    with pytest.raises(ChatInputError, match="server is full"):
        manager.get("d")
    for key in ("b", "c"):
        manager.get(key)._busy = False


def test_sampling_options_ranges():
    cfg = ServeConfig()
    o = sampling_options(cfg, temperature=0.7, top_p=0.9, max_new_tokens=12, seed=-1, steps=3, guidance=4.0,
                         scheduler="ddim", outputs=["image"], prefix="Sure <img>")
    assert o.seed is None and o.steps == 3 and [m.value for m in o.allowed_outputs] == ["image"]
    for bad in ({"temperature": 3.0}, {"top_p": 1.5}, {"steps": 0}, {"scheduler": "euler"}, {"outputs": ["smell"]},
                {"prefix": "x" * 500}):
        with pytest.raises(ChatInputError):
            sampling_options(cfg, **bad)


def test_chat_settings_as_the_ui_sends_them():
    cfg = ServeConfig()
    o = ChatSettings(0.5, 0.9, 12.0, 7.0, 0, 0.0, "default", ("audio",), None).options(cfg)
    assert (o.temperature, o.max_new_tokens, o.seed, o.steps, o.guidance, o.scheduler, o.prefix) == \
        (0.5, 12, 7, None, None, None, "")
    assert [m.value for m in o.allowed_outputs] == ["audio"]
    assert ChatSettings().options(cfg) == sampling_options(cfg)
    with pytest.raises(ChatInputError):
        ChatSettings(steps=10 ** 6).options(cfg)


def test_export_is_a_training_manifest(manager, tmp_path):
    from codi2.conversation import message_from_dict

    st = manager.get("a")
    with pytest.raises(ChatInputError, match="nothing to export"):
        st.export()
    img = save_image(make_image(0), tmp_path / "cat.png")
    _last(st.submit("draw it", [str(img)], IMG))
    _last(st.submit("thanks", options=TEXT))
    with zipfile.ZipFile(st.export()) as z:
        rec = json.loads(z.read("manifest.jsonl"))
        names = set(z.namelist())
    assert rec["schema"] == 1 and rec["source"] == "chat" and len(rec["messages"]) == 4
    msgs = [message_from_dict(m) for m in rec["messages"]]
    assert [p.path for m in msgs for p in m.media_parts] == sorted(n for n in names if n.startswith("media/"))


def test_bad_upload_message_names_the_file_not_the_server_path(pipe, tmp_path):
    m = SessionManager(pipe, ServeConfig(media=MediaLimits(max_image_pixels=100)), tmp_path / "s")
    st = m.get("x")
    big = save_image(make_image(0, 40), tmp_path / "big.png")
    ev = _last(st.submit("look", [str(big)]))
    assert isinstance(ev, TurnFailed) and ev.message.startswith("big.png: image is 40×40") and str(tmp_path) not in ev.message
    assert st.notices[-1].user.text == "look 📎 big.png" and list(st.workdir.iterdir()) == []
    m.close()
    assert not (tmp_path / "s").exists() or list((tmp_path / "s").iterdir()) == []
