import pytest

from codi2.conversation import Message, Part, message_from_dict, part_key
from codi2.losses import IGNORE_INDEX
from codi2.modality import Modality

from .conftest import make_audio, make_image


def _conv():
    return [
        Message("user", [Part("image", media=make_image(0)), Part.from_text("Make it blue.")]),
        Message("assistant", [Part.from_text("Here:"), Part("image", media=make_image(1), caption="a blue circle")]),
        Message("user", [Part("audio", media=make_audio(0)), Part.from_text("Now louder")]),
        Message("assistant", [Part.from_text("Done.")]),
    ]


def test_encode_spans_and_labels(tiny_model):
    b = tiny_model.builder
    enc = b.encode(_conv())
    assert len(enc.ids) == len(enc.labels)
    kinds = [(s.modality, s.output) for s in enc.spans]
    assert kinds == [(Modality.IMAGE, False), (Modality.IMAGE, True), (Modality.AUDIO, False)]
    img_in, img_out, aud_in = enc.spans
    # input slots: n_in copies of [IMG_IN] between <img> and </img>, unsupervised
    assert enc.ids[img_in.start - 1] == b.ids["<img>"]
    assert enc.ids[img_in.start:img_in.start + 17] == [b.ids["[IMG_IN]"]] * 17
    assert enc.ids[img_in.start + 17] == b.ids["</img>"]
    first_sup = next(i for i, l in enumerate(enc.labels) if l != IGNORE_INDEX)
    assert img_in.start + 17 < first_sup < img_out.start - 1  # the user turn is unsupervised
    # output span: the opening token is supervised, slots are not, the closing token is
    assert enc.labels[img_out.start - 1] == b.ids["<img>"]
    assert enc.labels[img_out.start:img_out.start + 2] == [IGNORE_INDEX] * 2
    assert enc.ids[img_out.start:img_out.start + 2] == [b.ids["[IMG_OUT_0]"], b.ids["[IMG_OUT_1]"]]
    assert enc.labels[img_out.start + 2] == b.ids["</img>"]
    assert aud_in.length == 1
    # every supervised token belongs to an assistant turn and the last is </s>
    sup = [i for i, l in enumerate(enc.labels) if l != IGNORE_INDEX]
    assert enc.ids[sup[-1]] == tiny_model.tokenizer.eos_token_id
    assert b.decode_text(enc.labels[i] for i in sup).startswith("Here")


def test_turn_pieces_concatenate_to_the_conversation(tiny_model):
    b = tiny_model.builder
    conv = _conv()
    full = b.encode(conv[:3])
    first = b.encode(conv[:2])
    turn = b.encode_turn(conv[:2], conv[2])
    assert first.ids + turn.ids == full.ids
    assert [s.start for s in turn.spans] == [s.start - len(first.ids) for s in full.spans[2:]]


def test_user_text_cannot_inject_slot_tokens(tiny_model):
    with pytest.raises(ValueError, match="IMG_IN"):
        tiny_model.builder.encode([Message("user", "hi [IMG_IN] there")])


def test_message_from_dict_errors_name_the_place():
    m = message_from_dict({"role": "user", "content": [{"type": "image", "path": "a.png"}, {"type": "text", "text": "x"}]})
    assert m.content[0].path == "a.png" and m.to_dict()["content"][1] == {"type": "text", "text": "x"}
    with pytest.raises(ValueError, match=r"msg\.content\[0\].*allowed"):
        message_from_dict({"role": "user", "content": [{"type": "image", "path": "a", "bogus": 1}]}, where="msg")
    with pytest.raises(ValueError, match="role 'bot'"):
        message_from_dict({"role": "bot", "content": "x"})
    with pytest.raises(ValueError, match="part type 'gif'"):
        message_from_dict({"role": "user", "content": [{"type": "gif", "path": "a"}]})


def test_part_key_is_content_based(tmp_path):
    a, b = make_image(0), make_image(0)
    assert part_key(Part("image", media=a)) == part_key(Part("image", media=b))
    assert part_key(Part("image", media=a)) != part_key(Part("image", media=make_image(1)))
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert part_key(Part("image", path=str(f))) == part_key(Part("image", path=str(f)))
