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
    with pytest.raises(ChatInputError, match="server is full"):
        manager.get("c")  # max_sessions=2, both used within session_keep_seconds: neither is evicted
    a.last_used -= manager.cfg.session_keep_seconds + 1
    manager.get("c")  # now the least recently used idle session (a) goes
    assert "a" not in manager and "b" in manager and not a_dir.exists()
    manager.get("b").last_used -= manager.cfg.session_keep_seconds + 1
    manager.get("c").last_used -= manager.cfg.session_keep_seconds + 1
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


# ----------------------------------------------------------------------------- issue 44
@pytest.mark.parametrize("field,value,words", [
    ("steps", float("nan"), "steps=nan is not a finite number; allowed: 1..100"),
    ("max_new_tokens", float("nan"), "max_new_tokens=nan is not a finite number; allowed: 1..512"),
    ("temperature", float("inf"), "temperature=inf is not a finite number; allowed: 0.0..2.0"),
    ("top_p", float("-inf"), "top_p=-inf is not a finite number; allowed: 0.0..1.0"),
    ("guidance", float("nan"), "guidance=nan is not a finite number; allowed: 0.0..30.0"),
    ("seed", 2**70, f"seed={2**70} is out of range; allowed: -1..4294967295 (-1 = random)"),
    ("seed", float(2**70), "seed=1.181e+21 is out of range; allowed: -1..4294967295"),
    ("seed", float("inf"), "seed=inf is not a finite number"),
    ("max_new_tokens", 2.5, "max_new_tokens=2.5 is not a whole number; allowed: 1..512"),
    ("temperature", "hot", "temperature='hot' is not a number; allowed: 0.0..2.0"),
])
def test_every_setting_is_checked_with_a_message_naming_the_field_and_range(field, value, words):
    with pytest.raises(ChatInputError) as e:
        sampling_options(ServeConfig(), **{field: value})
    assert words in str(e.value)
    o = sampling_options(ServeConfig(), seed=2**32 - 1, max_new_tokens=12.0, steps="3")
    assert o.seed == 2**32 - 1 and o.max_new_tokens == 12 and o.steps == 3


def test_every_bad_file_of_a_message_is_reported(manager, tmp_path):
    st = manager.get("a")
    good = save_image(make_image(0), tmp_path / "good.png")
    bad1, bad2 = tmp_path / "one.png", tmp_path / "two.wav"
    bad1.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00junk" * 20)
    bad2.write_text("not a sound")
    ev = _last(st.submit("look @9", [str(bad1), str(good), str(bad2)], TEXT))
    assert isinstance(ev, TurnFailed) and ev.message.startswith("3 of the message's media were refused")
    for words in ("one.png", "two.wav", "no media @9"):
        assert words in ev.message
    assert str(tmp_path) not in ev.message and list(st.workdir.iterdir()) == []  # the good one's copy went too


def test_strangers_cannot_evict_a_recent_session_and_eviction_is_fair_per_client(pipe, tmp_path):
    m = SessionManager(pipe, ServeConfig(max_sessions=4, max_sessions_per_client=2), tmp_path / "s")
    mine = m.get("mine", client="10.0.0.1")
    img = save_image(make_image(0), tmp_path / "cat.png")
    _last(mine.submit("this one", [str(img)], TEXT))
    for i in range(64):  # clear / undo / stop / export from fresh keys create nothing
        assert m.find(f"stranger-{i}") is None
    assert len(m) == 1
    made = 0
    for i in range(64):  # fresh keys that do send: refused once the server is full, never evicting "mine"
        try:
            m.get(f"stranger-{i}", client=f"10.0.1.{i % 3}")
            made += 1
        except ChatInputError as e:
            assert "server is full" in str(e) or "limit per client" in str(e)
    assert made == 3 and m.find("mine") is mine
    assert isinstance(_last(mine.submit("now @1", options=TEXT)), TurnDone)  # @1 still resolves
    # fairness: once idle past the keep window, room comes from the client holding the most sessions
    m2 = SessionManager(pipe, ServeConfig(max_sessions=3, max_sessions_per_client=3, session_keep_seconds=0),
                        tmp_path / "t")
    a1, a2 = m2.get("a1", client="A"), m2.get("a2", client="A")
    b1 = m2.get("b1", client="B")
    b1.last_used -= 100  # B's is the least recently used of all, but A holds more sessions
    m2.get("c1", client="C")
    assert m2.find("b1") is b1 and m2.find("a1") is None and m2.find("a2") is a2
    # a client over its share makes room from its own sessions only
    m3 = SessionManager(pipe, ServeConfig(max_sessions=3, max_sessions_per_client=2, session_keep_seconds=0),
                        tmp_path / "u")
    other = m3.get("o", client="O")
    other.last_used -= 100  # the oldest, but X is over its share when the server is full
    m3.get("x1", client="X"), m3.get("x2", client="X"), m3.get("x3", client="X")
    assert m3.find("o") is other and m3.find("x1") is None and len(m3) == 3
    for mm in (m, m2, m3):
        mm.close()


def test_a_detached_session_is_adopted_and_a_lost_one_is_rebuilt_from_the_browser_copy(pipe, tmp_path):
    m = SessionManager(pipe, ServeConfig(), tmp_path / "s")
    st = m.get("tab1")
    img = save_image(make_image(0), tmp_path / "cat.png")
    _last(st.submit("draw like this", [str(img)], IMG))
    _last(st.submit("again", options=TEXT))
    snap = json.loads(json.dumps(st.snapshot()))  # what the browser stores
    assert snap["id"] == st.conversation_id and [x["number"] for x in snap["media"]] == [1, 2]
    assert all(x["data"].startswith("data:image/png;base64,") for x in snap["media"])
    # a reload: the tab's key changes; the server still has the session
    m.detach("tab1")
    same, lost = m.resume("tab2", snap)
    assert same is st and lost is None and m.find("tab2") is st and m.find("tab1") is None
    with pytest.raises(ChatInputError, match="open in another tab"):
        m.resume("tab3", snap)
    # a stranger cannot delete it; its own tab can
    assert not m.drop_conversation("stranger", snap["id"])
    # the server lost it (restart): rebuilt from the copy, media and @N included
    m2 = SessionManager(pipe, ServeConfig(), tmp_path / "s2")
    snap["media"][1]["data"] = None  # one media not in the copy
    new, lost = m2.resume("tab4", snap)
    assert lost == ["@2"] and new.conversation_id == snap["id"] and len(new.log) == 2
    assert [it.number for it in new.media] == [1] and new.media[0].path.parent == new.workdir
    assert len(new.session.turns) == 2
    ev = _last(new.submit("and @1 once more", options=TEXT))
    assert isinstance(ev, TurnDone) and new.log[-1].user.media_parts[0].path == str(new.media[0].path)
    assert "[image no longer available]" in json.dumps([t.reply.to_dict() for t in new.log])
    # a malformed or hostile copy is refused, not trusted
    for bad in ({"schema": 1, "id": "../../etc", "turns": []}, {"id": "0" * 32}, "x"):
        with pytest.raises(ChatInputError):
            m2.resume("tab5", bad)
    evil = dict(snap, id="1" * 32, media=[dict(snap["media"][0], data="data:image/png;base64," +
                                               __import__("base64").b64encode(b"not a png").decode())])
    _, lost = m2.resume("tab6", evil)
    assert lost == ["@1"]
    m.close(), m2.close()


def test_a_session_ending_deletes_its_files_and_calls_on_end(pipe, tmp_path):
    ended = []
    m = SessionManager(pipe, ServeConfig(session_idle_seconds=60), tmp_path / "s", on_end=ended.append)
    st = m.get("a")
    upload_copy = tmp_path / "gradio-cache" / "abc" / "cat.png"
    upload_copy.parent.mkdir(parents=True)
    save_image(make_image(0), upload_copy)
    st.owned_files.add(str(upload_copy))
    _last(st.submit("draw", [str(upload_copy)], IMG))
    folder = st.workdir
    assert len(list(folder.iterdir())) == 2
    st.last_used -= 61
    m.expire()
    assert ended == [st] and not folder.exists() and not upload_copy.exists() and len(m) == 0
    m.close()
