"""How people ask: a request grammar for every mini-world task, its frames split into train and held-out ones.

The world's templates (:mod:`.build`) are a few fixed sentences per task. People write "could u draw me a
tiny violet star up top pls", put the picture after the words, ask two edits at once, or say "recolour it".
This grammar writes the user's turns of every task in such words and layouts:

* many **frames** per task (commands and questions, one sentence or several), with politeness and filler around
  them, synonyms (big / huge / large, violet / purple, box / square …), the attributes of an object in varied
  order, British and American spellings, lower case, missing final punctuation and a few typos (never in a
  word that names an attribute, so every request can still be answered);
* the **layouts** a chat app produces: every medium first and then the text (what ``ChatState.prepare`` builds
  from uploads), the text first, text interleaved with the media, several sentences;
* **edits** in other words ("recolour it", "switch it to", "enlarge it", "shift it over to the left") and two
  edits in one request ("make it blue and large").

Every frame list is split: ``train`` frames (the training data of stages 11-14), ``train2`` frames (more training
data from stage 15 on: the first held-out set, studied frame by frame after stage 14 and so no longer a check, and
more synonyms) and ``heldout`` frames (a check of generalisation to wordings never trained on: a second set, written
before stage 15 trained; see the end of this module). ``codi2 build-data world --frames train|train2|heldout``
writes records whose user turns come from one side only; ``--frames template`` (the default) writes the templates,
byte for byte as before. The vocabulary (synonyms, spellings, typo rules) and the layouts are shared; the frames,
the politeness wrappers and the out-of-scope prompts are split.

Requests that leave part of the object open ("draw a red circle": no size, no position) are the world's open tasks
in free words (:func:`open_asked`, :func:`open_phrase`): one to three attributes named, scored on those.

Out-of-scope prompts (greetings, questions about the model, other objects, poems, other languages, arithmetic,
general questions) are here too, with the short true reply the model gives them (:func:`scope_reply`) and the
judge of such a reply (:func:`is_scope_reply`).

All draws come from the generator passed in (``build`` gives each record its own phrasing generator, so a
record's objects do not depend on its wording: the same seed gives the same objects at every ``--frames``).
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from .world import COLOURS, POSITIONS, SHAPES, WorldObject, article

FRAME_SETS: tuple[str, ...] = ("template", "train", "train2", "heldout")  # --frames
NOISE_RATE = 0.3  # the share of train-side requests with filler words (see noise)
GRAMMAR_SPLITS: tuple[str, ...] = ("train", "heldout", "train2")  # (this order: the records' phrasing seeds)


def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _side(frames: str) -> str:
    if frames not in GRAMMAR_SPLITS:
        raise ValueError(f"grammar frames {frames!r}; allowed: {', '.join(GRAMMAR_SPLITS)}")
    return frames


# --------------------------------------------------------------------------- vocabulary (shared by both sides)

SIZE_WORDS = {"small": ("small", "little", "tiny", "small", "wee"), "large": ("large", "big", "huge", "large", "giant")}
SHAPE_WORDS = {"circle": ("circle", "circle", "disc", "round dot"), "square": ("square", "square", "box"),
               "triangle": ("triangle",), "star": ("star", "star", "five-pointed star")}
COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"purple": ("purple", "purple", "violet")}
# where an object is (pictures) and where it goes (edits)
WHERE = {
    "left": ("on the left", "at the left", "on the left side", "on the left-hand side", "to the left",
             "at the left edge"),
    "right": ("on the right", "at the right", "on the right side", "on the right-hand side", "to the right",
              "at the right edge"),
    "top": ("at the top", "near the top", "up top", "at the top of the picture", "along the top"),
    "bottom": ("at the bottom", "near the bottom", "down at the bottom", "at the bottom of the picture",
               "along the bottom"),
    "center": ("in the centre", "in the center", "in the middle", "right in the middle", "centred", "centered"),
}
TO = {"left": ("to the left", "over to the left", "to the left side", "left"),
      "right": ("to the right", "over to the right", "to the right side", "right"),
      "top": ("to the top", "up to the top", "upwards to the top"),
      "bottom": ("to the bottom", "down to the bottom", "down to the lower edge"),
      "center": ("to the middle", "to the centre", "to the center", "into the middle")}
MOTION = {"left": ("moving left", "moving to the left", "sliding to the left", "going left", "heading left",
                   "drifting left"),
          "right": ("moving right", "moving to the right", "sliding to the right", "going right", "heading right",
                    "drifting right"),
          "up": ("moving up", "moving upwards", "rising up", "going up", "heading upward", "floating up"),
          "down": ("moving down", "moving downwards", "falling down", "going down", "heading downward",
                   "sinking down")}
SPELLINGS = (("colour", "color"), ("centre", "center"), ("recolour", "recolor"), ("centred", "centered"))
ATTRIBUTE_WORDS = frozenset(
    [w for ws in SIZE_WORDS.values() for x in ws for w in x.split()]
    + [w for ws in SHAPE_WORDS.values() for x in ws for w in x.replace("-", " ").split()]
    + [w for ws in COLOURS for w in ws.split()] + ["violet"] + list(POSITIONS)
    + ["centre", "center", "middle", "up", "down", "upward", "upwards", "downward", "downwards", "pitch", "higher",
       "lower", "louder", "quieter", "softer", "bigger", "smaller", "larger", "enlarge", "shrink", "sound", "video",
       "picture", "image", "clip", "hear", "draw", "not", "no", "and", "this", "these", "same", "examples", "example"])


def noun(obj: WorldObject, rng: np.random.Generator) -> str:
    """An object in free words, its attributes in varied order: 'a tiny violet star', 'a star, small and purple',
    'a purple star that is small'."""
    size, colour = pick(rng, SIZE_WORDS[obj.size]), pick(rng, COLOUR_WORDS[obj.colour])
    shape = pick(rng, SHAPE_WORDS[obj.shape])
    k = int(rng.integers(6))
    if k <= 2:
        s = f"{size} {colour} {shape}"
    elif k == 3:
        s = f"{colour} {size} {shape}"
    elif k == 4:
        return f"{article(shape)} {shape}, {size} and {colour}"
    else:
        return f"{article(colour)} {colour} {shape} that is {size}"
    return f"{article(s)} {s}"


def image_phrase(obj: WorldObject, rng: np.random.Generator) -> str:
    """A picture's object and where it is, in free words and order."""
    where = pick(rng, WHERE[obj.position])
    if rng.random() < 0.2:
        return f"{where}, {noun(obj, rng)}"
    return f"{noun(obj, rng)} {where}"


def audio_phrase(obj: WorldObject, rng: np.random.Generator) -> str:
    return noun(obj, rng)


def video_phrase(obj: WorldObject, direction: str, rng: np.random.Generator) -> str:
    return f"{noun(obj, rng)} {pick(rng, MOTION[direction])}"


# Under-specified requests ("draw a red circle", "let me hear something big"): the world's open tasks, in free
# words. The template side names one attribute ("something red", "a star"); people name one to three and leave the
# rest (a missing size or position) to the model, which must still answer in the medium they asked for.
OPEN_NAMED = {"image": ("colour", "shape", "size", "position"), "audio": ("colour", "shape", "size"),
              "joint": ("colour", "shape", "size")}
OPEN_HEADS = ("something", "something", "anything", "a thing", "an object", "a shape")


def open_asked(modality: str, rng: np.random.Generator) -> tuple[str, ...]:
    """Which attributes an under-specified request names (one to three, never all of a picture's four), in the
    order of ``OPEN_NAMED``; ``modality``: image, audio or joint (a picture and its sound)."""
    if modality not in OPEN_NAMED:
        raise ValueError(f"open request modality {modality!r}; allowed: {', '.join(OPEN_NAMED)}")
    attrs = OPEN_NAMED[modality]
    k = int(rng.choice((1, 2, 3), p=(0.3, 0.45, 0.25)))
    k = min(k, len(attrs) - 1)
    picked = set(int(i) for i in rng.choice(len(attrs), size=k, replace=False))
    return tuple(a for i, a in enumerate(attrs) if i in picked)


def open_phrase(obj: WorldObject, asked: Sequence[str], rng: np.random.Generator) -> str:
    """An object named by ``asked`` alone, in free words: 'a red circle', 'something big and purple',
    'a tiny star at the top', 'a blue shape on the left'."""
    adjs = [pick(rng, SIZE_WORDS[obj.size])] if "size" in asked else []
    if "colour" in asked:
        adjs.append(pick(rng, COLOUR_WORDS[obj.colour]))
    if "shape" in asked:
        s = " ".join(adjs + [pick(rng, SHAPE_WORDS[obj.shape])])
        s = f"{article(s)} {s}"
    else:
        head = pick(rng, OPEN_HEADS)
        if not adjs:  # position alone: 'something at the top'
            s = head
        elif head in ("something", "anything") or rng.random() < 0.3:
            both = " and ".join(adjs)
            s = f"{head} {both}" if head in ("something", "anything") else f"{head} that is {both}"
        else:
            s = " ".join(adjs + [head.split(" ", 1)[1]])
            s = f"{article(s)} {s}"
    if "position" in asked:
        s = f"{s} {pick(rng, WHERE[obj.position])}"
    return s


# --------------------------------------------------------------------------- frames ({x}: the slot), split in two

# every task's request frames. {x}: the object phrase of gen tasks / joint; {m}: a motion phrase
FRAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "gen_image": {
        "train": ("Draw {x}.", "Show me {x}.", "Make a picture of {x}.", "Can you draw {x}?",
        "I'd like a picture of {x}.",
                  "Paint {x}.", "Draw me {x}, please.", "Could you make an image of {x}?", "Picture of {x}.",
                  "Create an image showing {x}.", "Sketch {x}.", "I want to see {x}.", "Generate a picture of {x}.",
                  "Give me an image of {x}.", "How would {x} look? Draw it.",
                  "Could you draw {x} for me?", "Can I have a picture of {x}?", "Show {x}.",
                  "I'd love an image of {x}.",
                  "Draw a picture: {x}.", "Do a drawing of {x}.", "Can you show me {x}?", "Make me an image of {x}.",
                  "Please picture {x}.", "I'm after an image of {x}.", "An image of {x}, please.",
                  "Create a drawing of {x}.",
                  "Let me see {x}.", "Show me what {x} looks like.", "Could I see {x}?", "Make an image: {x}.",
                  "Give me a drawing of {x}.", "I need a picture of {x}, thanks.", "Can you paint {x}?",
                  "Draw this: {x}."),
        "train2": ("Would you mind drawing {x}?", "Render {x} for me.", "Produce an image with {x}.",
                    "Let me see a drawing of {x}.", "Can I get a picture of {x}?", "Illustrate {x}.",
                    "I need an image of {x}.", "Please make me a picture: {x}."),
    },
    "gen_audio": {
        "train": ("Play the sound of {x}.", "What does {x} sound like?", "Make the sound of {x}.",
                  "Let me hear {x}.", "I want to hear {x}.", "Can you play {x}?", "Play me {x}, please.",
                  "How does {x} sound?", "Give me the sound {x} makes.", "Make a sound like {x}.",
                  "Generate the sound of {x}.", "Sound of {x}.",
                  "Can I hear {x}?", "Play {x}.", "Give me the sound of {x}.", "Make me the sound of {x}.",
                  "Let me listen to {x}.", "I'd like to hear the sound of {x}.", "Could you play the sound of {x}?",
                  "What sound does {x} make?", "Can you make {x} sound?", "Play what {x} sounds like.",
                  "Create the sound of {x}.", "A sound of {x}, please.", "Let me hear how {x} sounds.",
                  "I want the sound of {x}.", "Make some noise like {x}.", "Generate audio of {x}.",
                  "Can you let me hear {x}?", "Give me some audio of {x}."),
        "train2": ("Could I hear what {x} sounds like?", "Produce the noise {x} makes.", "Let's hear {x}.",
                    "Would you play the sound of {x}?", "Make me some audio of {x}.", "I'd love to hear {x}."),
    },
    "gen_video": {
        "train": ("Make a video of {x}.", "Show me a clip of {x}.", "Animate {x}.", "Can you animate {x}?",
                  "I want a video of {x}.", "Make a short clip of {x}.", "Create a video showing {x}.",
                  "Give me an animation of {x}.", "Video of {x}.", "Make a movie of {x}.",
                  "Can you make a video of {x}?", "Show me a video of {x}.", "I'd like a clip of {x}.",
                  "Give me a clip of {x}.",
                  "Create a clip of {x}.", "Make me a video of {x}.", "Could you animate {x}?",
                  "Can I see a clip of {x}?",
                  "A video of {x}, please.", "Generate a video of {x}.", "Make an animation of {x}.",
                  "Show {x} in a clip.",
                  "I want to watch {x}.", "Let me see a clip of {x}.", "Please make a video: {x}."),
        "train2": ("Could you film {x}?", "Produce a clip with {x}.", "Render an animation of {x}.",
                    "Let me watch {x}.", "I'd like to see a video of {x}.", "Would you make a clip of {x}?"),
    },
    "caption_image": {
        "train": ("What is in this picture?", "Describe the image.", "What do you see?", "Caption this image.",
                  "What's this?", "What is shown here?", "Tell me what this picture shows.", "Describe this.",
                  "What object is this?", "Can you describe this picture?", "What's in the image?",
                  "Write a caption for this.",
                  "What's in this picture?", "What is this?", "Tell me what you see.",
                  "Describe what's in the picture.",
                  "Can you tell me what this is?", "What is this picture of?", "What shape is this?",
                  "Tell me about this image.",
                  "What's in here?", "What does it show?", "Could you describe this image?", "Describe it.",
                  "Give me a caption for this.", "What is drawn here?", "What do you see in this?",
                  "Name what is in the image.",
                  "Tell me what's in it.", "Caption this.", "What's shown in this picture?", "What is it?"),
        "train2": ("What am I looking at?", "Explain what the picture contains.", "Say what you see in it.",
                    "What does this image show?", "Give me a short description of this.", "Which object is here?"),
    },
    "caption_audio": {
        "train": ("What makes this sound?", "Describe this sound.", "What object does this sound come from?",
                  "What is this sound?", "What do you hear?", "Which object sounds like this?",
                  "Can you describe this audio?", "Tell me what makes this noise.", "Caption this sound.",
                  "What's making this noise?",
                  "What is making this sound?", "What sound is this?", "Tell me what you hear.", "What is this noise?",
                  "Describe what you hear.", "What does this sound come from?", "Can you tell me what this sound is?",
                  "What's this sound?", "Describe it.", "What object makes this noise?", "Tell me about this sound.",
                  "Give me a caption for this sound.", "What is this?", "Name the object in this sound.",
                  "What's this?", "Could you describe what this is?", "Caption this audio."),
        "train2": ("Whose sound is this?", "Identify this sound.", "What kind of object produces this?",
                    "Listen to this: what is it?", "Say what you hear.", "Describe the audio."),
    },
    "caption_video": {
        "train": ("Describe this video.", "What happens in this clip?", "What is moving here, and where to?",
                  "What's going on in this video?", "Caption this clip.", "What do you see moving?",
                  "Tell me what this clip shows.", "Which way does it move?", "Describe the clip.",
                  "What is in this video?",
                  "What's happening here?", "What is this video?", "Tell me what happens.", "What moves in this clip?",
                  "Describe what you see.", "What is going on?", "Can you describe this clip?",
                  "Tell me about this video.",
                  "What's moving, and which way?", "Caption this video.", "Describe it.", "What is this?",
                  "Give me a caption for this clip.", "Where does it go?", "What does this clip show?", "What's this?"),
        "train2": ("Summarise this clip.", "Explain what the video shows.", "What moves, and in which direction?",
                    "Watch this and describe it.", "Say what happens here.", "What's this clip about?"),
    },
    "image_to_audio": {
        "train": ("What does this sound like?", "Play the sound of this object.", "Let me hear this object.",
                  "How does this sound?", "Make the sound of this.", "Can you play what this sounds like?",
                  "I want to hear this shape.", "Give me its sound.", "Play this.",
                  "Play how this sounds.", "How would this sound?", "What would this sound like?", "Let me hear it.",
                  "Make this into a sound.", "Give me the sound of this.", "Can I hear this?", "Play the sound of it.",
                  "I'd like to hear this one.", "Could you play this shape?", "What sound does this make?",
                  "Make it into audio.", "Let me listen to this."),
        "train2": ("What noise would this make?", "Turn this picture into a sound.", "Let's hear this one.",
                    "Produce the sound of the thing in the picture."),
    },
    "audio_to_image": {
        "train": ("Draw the object that makes this sound.", "What does this sound look like? Draw it.",
                  "Show me what makes this sound.", "Draw what you hear.", "Make a picture of this sound.",
                  "Can you draw the source of this sound?", "What would this look like? Show me.",
                  "Picture this sound.",
                  "Draw this sound.", "Show me this sound.", "Draw what makes this noise.",
                  "Make an image of this sound.",
                  "What does this look like? Draw it.", "Can you draw this?", "Draw it.",
                  "Give me a picture of this sound.",
                  "What would make this sound? Draw it.", "Show me what this sounds like.",
                  "Make a picture of what I hear.",
                  "Let me see this sound."),
        "train2": ("Turn this sound into a picture.", "Illustrate whatever makes this noise.",
                    "Let me see what sounds like this.", "Render the thing you hear."),
    },
    "image_audio_to_video": {
        "train": ("Make a video of this shape, in the colour this sound has, {m}.",
                  "Animate this object {m}, coloured like this sound.",
                  "Make a clip of this shape {m}, with the colour of this sound.",
                  "Animate this shape {m}; take its colour from the sound.",
                  "Video of this shape {m}, coloured by this sound.",
                  "Make a clip of this shape {m}, in the colour of this sound.",
                  "I want a video: this shape, this sound's colour, {m}.",
                  "Take the shape from the picture and the colour from the sound, {m}, in a video.",
                  "Animate the shape in the picture {m}, in the sound's colour.",
                  "Make a video with this shape {m}, coloured like the sound.",
                  "Create a clip of this shape in the colour of the sound, {m}."),
        "train2": ("Use the shape from the picture and the colour from the sound, and show it {m}.",
                    "I want this shape, in this sound's colour, {m} in a clip.",
                    "Render a clip: this shape, the sound's colour, {m}."),
    },
    "subject_image": {
        "train": ("This object, {c}, {w}.", "Draw this object in {c}, {w}.", "Show the same object, but {c} and {w}.",
                  "Draw it again in {c}, {w}.", "Same shape, {c}, {w}, please.", "Redraw this one {c} and {w}.",
                  "Draw the same thing in {c}, {w}.", "Make this object {c}, and put it {w}.",
                  "This one again, {c}, {w}.",
                  "Same object but {c}, {w}.", "Redraw it {c}, {w}.", "Show this object {c} and {w}.",
                  "Draw this one {c}, {w}, please."),
        "train2": ("Keep the object but make it {c} and place it {w}.", "I want this thing {c}, {w}.",
                    "Recreate this one, {c} this time, {w}."),
    },
    "joint_image_audio": {
        "train": ("Show me {x} and let me hear it.", "Draw {x}, and play its sound too.", "I want to see and hear {x}.",
                  "Picture and sound of {x}, please.", "Draw {x} and play how it sounds.",
                  "Can I see {x} and hear it too?", "Make an image of {x} and its sound.",
                  "Draw {x} and let me hear it.", "Give me a picture and a sound of {x}.",
                  "Show me {x} and play its sound.",
                  "An image and a sound of {x}, please.", "Can you draw {x} and play it?",
                  "Make {x} as a picture and a sound.",
                  "I'd like to see and hear {x}.", "Picture plus sound: {x}.", "Show and play {x}."),
        "train2": ("Both a picture and a sound of {x}.", "Let me see {x}, and also hear it.",
                    "Give me {x} as an image plus its sound."),
    },
    # in-context edits: an intro (before or after the pairs) and a query sentence
    "icl_intro": {
        "train": ("Look at these examples.", "Here are some examples.", "Study these pairs.",
        "Each pair shows a change.",
                  "See how each one changes.", "These pairs show an edit.", "Here is a change, shown by example.",
                  "Look at what happens in these pairs.",
                  "Here are two examples.", "Look at the pairs.", "See these examples.", "Look at this change.",
                  "The first becomes the second in each pair.", "Here's an example of an edit.",
                  "Look at what changed.",
                  "These show a change."),
        "train2": ("Notice the change from each first to each second.", "Observe these before-and-after pairs.",
                    "Check the examples."),
    },
    "icl_query": {
        "train": ("Now do the same to this one:", "Apply the same change to this:", "Do the same here:",
                  "And this one?", "Do that to this one.", "Now change this one the same way.",
                  "Same edit on this, please.", "What would this become?",
                  "Do the same to this.", "Now this one:", "Apply it to this one.", "Same to this one please.",
                  "Do it to the last one.", "Change this one like that.", "Now do this one the same way.",
                  "Make the same change here."),
        "train2": ("Do likewise with the last one.", "Treat the last one the same way.",
                    "Transform the final one in the same manner."),
    },
    # edits: 'then' rounds of a three-round dialogue start with these
    "round": {
        "train": ("Now ", "Then ", "Next, ", "And now ", "Okay, now ", ""),
        "train2": ("After that, ", "Good. Now ", "Also "),
    },
    # two edits joined
    "two": {
        "train": ("{a} and {b}", "{a}, and {b}", "{a}. Also {b}", "{a}, then {b}", "{a} and also {b}",
                  "{a} and then {b}", "{a}. And {b}", "{a}, plus {b}", "{a}. Then {b}", "{a} & {b}"),
        "train2": ("{a}; plus {b}", "{a}, as well as {b}"),
    },
    "two_values": {  # 'make it blue and large'
        "train": ("Make it {u} and {v}.", "I want it {u} and {v}.", "Change it to {u} and {v}.",
        "It should be {u} and {v}.",
                  "Make it {u}, and {v}.", "Can you make it {u} and {v}?", "I'd like it {u} and {v}.",
                  "Now {u} and {v}.",
                  "Make it both {u} and {v}."),
        "train2": ("Could it be {u} and {v}?", "Turn it {u} and {v}."),
    },
}

# edit phrases by attribute (image / audio), {v}: the new value's words, {t}: a 'to the left' phrase
EDIT_FRAMES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "image": {
        "colour": {"train": ("make it {v}", "change its colour to {v}", "paint it {v}", "turn it {v}",
        "recolour it {v}",
                             "switch it to {v}", "colour it {v}", "give it a {v} colour", "I want it {v}",
                             "make the colour {v}", "change it to {v}", "use {v} instead",
                             "can you make it {v}", "I'd like it {v}", "make it {v} please", "it should be {v}",
                             "go with {v}", "change the colour to {v}", "give it {v}", "try it in {v}"),
                   "train2": ("dye it {v}", "can it be {v} instead", "recolour it to {v}", "fill it with {v}")},
        "shape": {"train": ("make it {a} {v}", "turn it into {a} {v}", "change the shape to {a} {v}",
        "swap it for {a} {v}",
                            "reshape it into {a} {v}", "replace it with {a} {v}", "make it {a} {v} instead",
                            "change it into {a} {v}", "I want {a} {v} instead", "switch it to {a} {v}",
                            "make that {a} {v}", "use {a} {v} instead", "can it be {a} {v}"),
                  "train2": ("morph it into {a} {v}", "I'd rather have {a} {v}", "let it become {a} {v}")},
        "size_large": {"train": ("make it bigger", "make it large", "enlarge it", "scale it up", "make it huge",
                                 "increase its size", "make it big", "grow it",
                                 "make it a lot bigger", "I want it bigger", "bigger please", "make it larger in size"),
                       "train2": ("blow it up in size", "make it larger", "upsize it")},
        "size_small": {"train": ("make it smaller", "shrink it", "make it small", "scale it down", "make it tiny",
                                 "reduce its size", "make it little",
                                 "make it a lot smaller", "I want it smaller", "smaller please", "make it less large"),
                       "train2": ("make it less big", "downsize it", "shrink it down")},
        "position": {"train": ("move it {t}", "put it {w}", "shift it over {t}", "place it {w}", "slide it {t}",
                               "move it over {t}", "push it {t}",
                               "I want it {w}", "put it over {t}", "can you move it {t}", "it should be {w}",
                               "have it {w}", "move the object {t}"),
                     "train2": ("drag it {t}", "relocate it {t}", "reposition it {t}")},
    },
    "audio": {
        "colour": {"train": ("make it sound {v}", "make it {v}", "change the pitch to {v}", "tune it to {v}",
                             "switch the pitch to {v}", "give it a {v} pitch", "make its pitch {v}",
                             "can it sound {v}", "change it to {v}", "I want it {v}", "set it to {v}"),
                   "train2": ("retune it to {v}", "set its pitch to {v}")},
        "pitch_up": {"train": ("raise the pitch", "make it a bit higher", "make the pitch higher",
        "pitch it up a step"),
                     "train2": ("nudge the pitch up",)},
        "pitch_down": {"train": ("lower the pitch", "make it a bit lower", "make the pitch lower",
        "pitch it down a step"),
                       "train2": ("nudge the pitch down",)},
        "shape": {"train": ("make it sound like {a} {v}", "give it the timbre of {a} {v}", "make it {a} {v} sound",
                            "switch the timbre to {a} {v}", "turn it into {a} {v} sound",
                            "I want it to sound like {a} {v}", "make it the sound of {a} {v}"),
                  "train2": ("let it sound like {a} {v} instead", "change its timbre to {a} {v}")},
        "size_large": {"train": ("make it louder", "make it louder and longer", "turn it up", "make it loud",
                                 "make it bigger and louder",
                                 "louder please", "increase the volume", "make the sound louder"),
                       "train2": ("boost the volume", "make it longer and louder")},
        "size_small": {"train": ("make it quieter", "make it softer and shorter", "turn it down", "make it quiet",
                                 "make it soft",
                                 "quieter please", "decrease the volume", "make the sound quieter"),
                       "train2": ("lower the volume", "make it shorter and quieter")},
    },
}

# the layouts of a turn with input media: how the app or a person arranges the text and the media
LAYOUTS = ("media_first", "text_first", "split")
LEADS = {  # a first sentence before the media (the 'split' layout): what the user is about to show
    "image": ("Here is a picture.", "Look at this.", "This is my image:", "Take a look:", "I have this picture."),
    "audio": ("Here is a sound.", "Listen to this.", "This is my sound:", "Have a listen:", "I recorded this."),
    "video": ("Here is a clip.", "Watch this.", "This is my video:", "Take a look:", "I have this clip."),
}

# politeness and filler around a request
POLITE: dict[str, dict[str, tuple[str, ...]]] = {
    "before": {"train": ("Please ", "Hi! ", "Hey, ", "Ok so ", "Hello, ", "Quick one: ", "Um, ", "Could you: ",
                         "Hi there. ", "Okay. ", "Hmm, ", "Hello! ", "Hey! ", "Excuse me, ", "Well, ", "Now, ",
                         "OK, ", "Hi, quick question. ", "Hey there, ", "Alright, "),
               "train2": ("Good morning! ", "So, ", "Right, ")},
    "after": {"train": (" Thanks!", " Thank you.", " Please.", " Thanks a lot.", " Cheers.", " :)",
                        " Thank you!", " thx", " Thanks in advance.", " Please and thank you.", " That would be great.",
                        " If you can.", " :D", " Thanks so much!"),
              "train2": (" Much appreciated.", " Ta.")},
}


# --------------------------------------------------------------------------- surface noise

def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    k = int(rng.integers(3))
    if k == 0:  # swap two letters
        return word[:i - 1] + word[i] + word[i - 1] + word[i + 1:]
    if k == 1:  # drop one
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # double one


def typo(text: str, rng: np.random.Generator) -> str:
    """One typo in one word that names no attribute (and no media word), if there is such a word of 4+ letters."""
    words = text.split(" ")
    ok = [i for i, w in enumerate(words) if re.fullmatch(r"[A-Za-z]{4,}", w) and w.lower() not in ATTRIBUTE_WORDS]
    if not ok:
        return text
    i = ok[int(rng.integers(len(ok)))]
    words[i] = _typo(words[i], rng)
    return " ".join(words)


def spelling(text: str, rng: np.random.Generator) -> str:
    """British or American spelling throughout (colour / color, centre / center, recolour / recolor)."""
    if rng.random() < 0.5:
        return text
    for brit, amer in SPELLINGS:
        text = re.sub(rf"\b{brit}\b", amer, text)
        text = re.sub(rf"\b{brit.capitalize()}\b", amer.capitalize(), text)
    return text


# Words people put around a request that carry none of it. Train-side requests get a few of them inserted, or
# swapped for one of their own words (never a word that names an attribute, a medium or the task), so the model
# learns to read a request by the words that carry it, not by the frame it memorised: requests in frames it never
# saw are full of words it never saw. Held-out requests are never noised (they are the check), and no word here
# appears only in held-out frames.
NOISE_WORDS = tuple("""
actually really just maybe perhaps quite very so now then also again still sort basically honestly
literally simply totally definitely probably somehow anyway though yet already soon today tonight tomorrow later
quickly slowly carefully nicely gently neatly simple lovely nice cool great awesome neat fine proper pretty
proper real whole entire single plain clean clear fresh quick brief short simple exact precise total
thing stuff something anything bit piece part type sort version copy one ones item object element
friend mate buddy folks guys everyone somebody someone people team boss teacher kid kids son daughter mum mom dad
project homework school class lesson work office meeting deck slide poster website game app story book
want need like love prefer hope wish guess think believe suppose wonder try trying tried wanted needed
got give gave take took bring brought kept let leave put set find found use used create creating
producing generate generating rendering craft design compose build form fashion whip
please kindly thanks thank cheers sorry excuse pardon hey hi hello yo okay ok alright sure yes yeah yep
minding would could should might may must shall will can
for with about from into onto over under around through across between by near of in on at as
my your our their his her the an some any each every
""".split())
PROTECTED = ATTRIBUTE_WORDS | frozenset(
    """describe description caption what what's whats which who tell play show draw drawing paint picture image
    photo sound sounds hear listen look see video clip animate animation movie make change turn move put shift
    slide push place colour color recolour recolor pitch timbre louder quieter bigger smaller size volume same
    it its edit example examples pair pairs do does like these""".split())  # a word with punctuation is never swapped


def noise(text: str, rng: np.random.Generator) -> str:
    """One to three filler words inserted into a request, or one of its non-carrying words swapped for one."""
    words = text.split(" ")
    if rng.random() < 0.35:
        free = [i for i, w in enumerate(words) if re.fullmatch(r"[A-Za-z']+", w) and w.lower() not in PROTECTED]
        if free:
            words[free[int(rng.integers(len(free)))]] = pick(rng, NOISE_WORDS)
            return " ".join(words)
    for _ in range(int(rng.integers(1, 4))):
        words.insert(int(rng.integers(len(words) + 1)), pick(rng, NOISE_WORDS))
    return " ".join(words)


def surface(text: str, rng: np.random.Generator, frames: str, polite: bool = True) -> str:
    """Politeness / filler, spelling, lower case, missing final punctuation and a few typos."""
    side = _side(frames)
    if polite and rng.random() < 0.3:
        lead = pick(rng, POLITE["before"][side])
        text = lead + (text[:1].lower() + text[1:] if not text.startswith("I ") and not text.startswith("I'") else text)
    if polite and rng.random() < 0.2:
        text = text + pick(rng, POLITE["after"][side])
    if side != "heldout" and rng.random() < NOISE_RATE:  # drawn on the train side only: held-out records unchanged
        text = noise(text, rng)
    text = spelling(text, rng)
    if rng.random() < 0.1:
        text = typo(text, rng)
    if rng.random() < 0.3:
        text = text.lower()
    if rng.random() < 0.3:
        text = text.rstrip(".!")
    return text


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# --------------------------------------------------------------------------- requests

def frame(kind: str, frames: str, rng: np.random.Generator) -> str:
    return pick(rng, FRAMES[kind][_side(frames)])


def edit_phrase(obj: WorldObject, attr: str, value: str, modality: str, frames: str, rng: np.random.Generator) -> str:
    """An edit in free words (lower case, no final full stop): 'recolour it blue', 'shift it over to the left'."""
    side, table = _side(frames), EDIT_FRAMES[modality]
    if attr == "colour":
        step = COLOURS.index(value) - COLOURS.index(obj.colour)
        if modality == "audio" and abs(step) == 1 and rng.random() < 0.5:
            return pick(rng, table["pitch_up" if step > 0 else "pitch_down"][side])
        return pick(rng, table["colour"][side]).format(v=pick(rng, COLOUR_WORDS[value]))
    if attr == "shape":
        v = pick(rng, SHAPE_WORDS[value])
        return pick(rng, table["shape"][side]).format(v=v, a=article(v))
    if attr == "size":
        return pick(rng, table[f"size_{value}"][side])
    if attr == "position":
        return pick(rng, table["position"][side]).format(t=pick(rng, TO[value]), w=pick(rng, WHERE[value]))
    raise ValueError(f"cannot edit attribute {attr!r}")


def value_words(attr: str, value: str, rng: np.random.Generator) -> str:
    """A new value as it follows 'make it …': 'blue', 'large', 'a star', 'on the left'."""
    if attr == "colour":
        return pick(rng, COLOUR_WORDS[value])
    if attr == "size":
        return pick(rng, SIZE_WORDS[value])
    if attr == "shape":
        v = pick(rng, SHAPE_WORDS[value])
        return f"{article(v)} {v}"
    return pick(rng, WHERE[value])


def edit_request(obj: WorldObject, edits: Sequence[tuple[str, str]], modality: str, frames: str,
                 rng: np.random.Generator, round_: int = 0) -> str:
    """The user's words for one or two edits of ``obj`` (a later round of a dialogue may start 'Now …')."""
    if len(edits) == 2 and rng.random() < 0.35:
        text = frame("two_values", frames, rng).format(u=value_words(*edits[0], rng), v=value_words(*edits[1], rng))
    else:
        phrases = [edit_phrase(obj, a, v, modality, frames, rng) for a, v in edits]
        if len(phrases) == 2:
            text = cap(frame("two", frames, rng).format(a=phrases[0], b=phrases[1])) + "."
        else:
            text = cap(phrases[0]) + "."
        if rng.random() < 0.25:
            text = pick(rng, ("Can you ", "Could you ", "Would you ", "Please ")) + text[:1].lower() + text[1:]
            if not text.startswith("Please"):
                text = text.rstrip(".") + "?"
    if round_ > 0:
        lead = frame("round", frames, rng)
        text = lead + (text[:1].lower() + text[1:] if lead else text)
    return surface(text, rng, frames)


def request(kind: str, frames: str, rng: np.random.Generator, **slots: str) -> str:
    """A request of task ``kind`` (a key of ``FRAMES``) with its slots filled, surface noise applied."""
    return surface(frame(kind, frames, rng).format(**slots), rng, frames)


def arrange(media: Sequence[dict], text: str, modality: str, rng: np.random.Generator,
            text_part) -> list[dict]:
    """The parts of a user turn with one or more input media and one request: every medium first (the chat
    app's order for uploads), the text first, or a lead sentence, the media, then the request."""
    layout = LAYOUTS[int(rng.choice(len(LAYOUTS), p=(0.5, 0.25, 0.25)))]
    if layout == "media_first":
        return [*media, text_part(text)]
    if layout == "text_first":
        return [text_part(text), *media]
    return [text_part(pick(rng, LEADS[modality])), *media, text_part(text)]


def icl_parts(pairs: Sequence[dict], query: dict, frames: str, rng: np.random.Generator, text_part) -> list[dict]:
    """An in-context turn: the app's card layout (every medium first, then intro and query as one text), the
    text first, the world's interleaved order, or an intro, the pairs, then the query sentence and medium."""
    intro, ask = frame("icl_intro", frames, rng), frame("icl_query", frames, rng)
    k = int(rng.choice(4, p=(0.4, 0.2, 0.2, 0.2)))
    if k == 0:
        return [*pairs, query, text_part(surface(f"{intro} {ask}", rng, frames, polite=False))]
    if k == 1:
        return [text_part(surface(f"{intro} {ask}", rng, frames, polite=False)), *pairs, query]
    if k == 2:
        return [text_part(surface(intro, rng, frames, polite=False)), *pairs,
                text_part(surface(ask, rng, frames, polite=False)), query]
    return [text_part(surface(intro, rng, frames, polite=False)), *pairs, query,
            text_part(surface(ask, rng, frames, polite=False))]


# --------------------------------------------------------------------------- out of scope

OOS_NOUNS = {
    "train": ("cat", "dog", "car", "house", "tree", "bicycle", "horse", "person", "flower", "boat", "bird", "robot",
              "pizza", "guitar", "mountain", "dragon", "train", "chair", "apple", "cow"),
    "train2": ("elephant", "castle", "airplane", "sunset", "penguin", "lion", "rocket", "teapot", "whale", "bridge",
                "unicorn", "motorbike"),
}
OOS_TOPICS = {"train": ("the sea", "love", "spring", "the moon", "my cat", "winter", "friendship", "coffee"),
              "train2": ("autumn leaves", "the city", "rain", "a lost key", "the stars at night", "mountains")}
OOS_FRAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "greeting": {"train": ("Hello!", "Hi", "Hey there!", "Good morning.", "Hello! Who are you?", "Hi, how are you?",
                           "yo", "Good evening!", "Hey, what's up?", "Howdy!"),
                 "train2": ("Greetings!", "Hiya, nice to meet you.", "Hello there, how's it going?",
                             "Good afternoon!", "hey hey", "Hi friend")},
    "self": {"train": ("Who are you?", "What are you?", "What can you do?", "What is your name?",
                       "Are you a human?", "What do you know?", "Who made you?", "How do you work?",
                       "What can I ask you?", "Are you ChatGPT?", "Help", "what is this"),
             "train2": ("Tell me about yourself.", "What are you able to make?", "Are you an AI?",
                         "What kind of model is this?", "Introduce yourself.", "What are your abilities?",
                         "How should I use you?", "Which things can you create?")},
    "object": {"train": ("Draw a {n}.", "Show me a {n}.", "Make a picture of a {n}.", "Play the sound of a {n}.",
                         "Make a video of a {n} running.", "Draw a red {n}.", "What does a {n} sound like?",
                         "Draw a {n} riding a bicycle.", "Can you draw a big {n}?"),
               "train2": ("Paint a {n} in the snow.", "Generate an image of a {n}.", "Let me hear a {n}.",
                           "I want a video of a {n} flying.", "Draw a blue {n} on the left.",
                           "Sketch a cute {n}.", "Show me a photo of a {n}.", "Animate a {n} dancing.")},
    "creative": {"train": ("Write a poem about {t}.", "Tell me a story about {t}.", "Write a song about {t}.",
                           "Tell me a joke.", "Write a haiku about {t}."),
                 "train2": ("Compose a limerick about {t}.", "Write an essay on {t}.",
                             "Make up a fairy tale about {t}.", "Give me a riddle about {t}.")},
    "language": {"train": ("Wie geht's?", "Bonjour, comment ça va ?", "¿Hola, qué tal?", "Ciao, come stai?",
                           "Zeichne einen roten Kreis.", "Dessine un carré bleu.", "Hallo, wer bist du?",
                           "Merci beaucoup !", "Dibuja una estrella.", "Hoe gaat het?"),
                 "train2": ("Guten Tag, was kannst du?", "Qui es-tu ?", "¿Puedes dibujar un círculo?",
                             "Buongiorno, disegna un triangolo.", "Olá, tudo bem?", "Hej, hur mår du?",
                             "Mal mir bitte einen Stern.", "Peux-tu faire un son ?")},
    "arithmetic": {"train": ("What is {a} + {b}?", "What's {a} times {b}?", "Calculate {a} minus {b}.",
                             "{a}+{b}=?", "How much is {a} plus {b}?"),
                   "train2": ("Compute {a} * {b}.", "What do you get if you add {a} and {b}?",
                               "Divide {a} by {b}.", "Solve {a} - {b}.")},
    "knowledge": {"train": ("What is the capital of France?", "What's the weather today?", "What time is it?",
                            "Who won the world cup?", "Translate 'cat' into French.",
                            "Write Python code to sort a list.",
                            "What is the meaning of life?", "Recommend a good book."),
                  "train2": ("How tall is Mount Everest?", "Explain quantum physics.", "Who is the president?",
                              "Write a SQL query.", "What should I cook tonight?", "How far is the moon?",
                              "Summarise the news.", "Fix my code please.")},
}
OOS_CATEGORIES = tuple(OOS_FRAMES)
# The reply is written in the world's own words only: the mini LLM's output rows (frozen; only the LoRA, the
# projectors, the heads and the new tokens' rows train) were fitted on world text alone, so a token it never wrote
# there ('Hello', 'shapes', 'Try', 'or', 'an', plural 's', byte pieces) stays all but impossible to write: a first
# wording with such words kept a loss of 4-5 nats a token through 1600 steps.
SCOPE_BODY = "I make a picture, a sound and a video of a circle, a square, a triangle and a star, in a colour."
SCOPE_SHAPES = ("circle", "square", "triangle", "star")


def oos_prompt(frames: str, rng: np.random.Generator, category: Optional[str] = None) -> tuple[str, str]:
    """An out-of-scope prompt of ``frames``' side: (category, text)."""
    side = _side(frames)
    cat = category or pick(rng, OOS_CATEGORIES)
    n = pick(rng, OOS_NOUNS[side])
    text = pick(rng, OOS_FRAMES[cat][side]).replace("a {n}", f"{article(n)} {{n}}").format(
        n=n, t=pick(rng, OOS_TOPICS[side]), a=int(rng.integers(2, 99)), b=int(rng.integers(2, 20)))
    if cat not in ("language",):
        text = surface(text, rng, frames, polite=cat not in ("greeting",))
    return cat, text


def oos_prompts(frames: str) -> list[str]:
    """Every distinct out-of-scope prompt of ``frames``' side before surface noise (small numbers fixed)."""
    side, out = _side(frames), set()
    for cat, fr in OOS_FRAMES.items():
        for f in fr[side]:
            for n in OOS_NOUNS[side]:
                for t in OOS_TOPICS[side]:
                    out.add(f.replace("a {n}", f"{article(n)} {{n}}").format(n=n, t=t, a=12, b=3))
    return sorted(out)


def example_request(rng: np.random.Generator) -> str:
    """An in-world request to suggest, in the world's templates: 'Draw a small red circle.'"""
    colour = pick(rng, [c for c in COLOURS if c != "orange"])  # 'an orange' uses a piece the model never wrote
    shape, size = pick(rng, SHAPES), pick(rng, ("small", "large"))
    return pick(rng, (f"Draw a {size} {colour} {shape}.", f"Play the sound of a {size} {colour} {shape}.",
                       f"Make a video of a {colour} {shape} moving up.", f"Show me a {size} {colour} {shape} on the left."))


def scope_reply(category: str, rng: np.random.Generator) -> str:
    """The short true reply to an out-of-scope prompt (any ``category``): what the model makes, and an example
    request to try."""
    if category not in OOS_FRAMES and category is not None:
        raise ValueError(f"unknown out-of-scope category {category!r}; allowed: {', '.join(OOS_CATEGORIES)}")
    return f"{SCOPE_BODY} Do this: {example_request(rng)}"


_SCOPE_MEDIA = re.compile(r"\b(pictures?|images?|sounds?|videos?|clips?)\b")


def is_scope_reply(text: str) -> bool:
    """Whether a reply says what the model's scope is: 'I make' + at least two of picture / sound / video + every
    shape of the world, and a request to try ('Do this: …'). A caption or an 'Here it is:' is not one."""
    t = (text or "").lower()
    return ("i make" in t and len(set(m.rstrip("s") for m in _SCOPE_MEDIA.findall(t))) >= 2
            and all(s in t for s in SCOPE_SHAPES) and "do this:" in t)


# --------------------------------------------------------------------------- the second train set and held-out set

# The first held-out frames were studied frame by frame after stage 14 (benchmarks/heldout_by_frame.py): they are no
# longer a check. Since stage 15 they train, as the ``train2`` side (the "train2" keys of the tables above, plus the
# synonyms below), and a second held-out set, written before stage 15 trained and never tuned on, is the check. The
# ``train`` side is unchanged, so the data of stages 11-14 is built as before.
TRAIN2_MORE: dict[str, tuple[str, ...]] = {
    "gen_image": ("Depict {x}.", "Visualise {x}.", "Visualize {x}.", "Give me a pic of {x}.", "Doodle {x}.",
                  "A photo of {x}, please.", "Make an illustration of {x}.", "Create artwork of {x}.",
                  "Can you whip up an image of {x}?", "Put {x} in a picture.", "Design a picture with {x}."),
    "gen_audio": ("Give me a recording of {x}.", "Synthesise the sound of {x}.", "Make {x} audible.",
                  "Produce audio of {x}.", "What noise does {x} make?", "Sound out {x}.", "Play a tone for {x}.",
                  "Render the sound of {x}."),
    "gen_video": ("Film {x}.", "Shoot a video of {x}.", "Make footage of {x}.", "Show {x} in motion.",
                  "Record a video of {x}.", "Make a GIF of {x}.", "Produce a video of {x}.",
                  "Generate an animation of {x}."),
    "caption_image": ("Identify the object.", "What's pictured?", "What is depicted here?", "Label this image.",
                      "What can you see?", "Explain this picture.", "Identify what is shown."),
    "caption_audio": ("What's that noise?", "Identify the source of this sound.", "What is producing this?",
                      "What am I hearing?", "Recognise this sound.", "Identify this noise."),
    "caption_video": ("Narrate this clip.", "What is happening in this footage?", "Summarize the video.",
                      "Describe the motion.", "Explain this clip."),
    "image_to_audio": ("Produce the sound of this.", "Sonify this picture.", "What would this picture sound like?",
                       "Give this image a sound."),
    "audio_to_image": ("Visualise this sound.", "Depict what makes this noise.", "Produce a picture of this sound.",
                       "Render what you hear."),
}
HELDOUT: dict[str, tuple[str, ...]] = {
    "gen_image": ("Could you please create a picture showing {x}?", "I'd really like to see {x}, drawn.",
                  "Mind drawing {x} for me?", "Make me a quick drawing of {x}.", "Draw up {x}.",
                  "Need a picture: {x}.", "Show me an image with {x} in it.", "Paint me a picture of {x}."),
    "gen_audio": ("Play me what {x} sounds like.", "How would {x} sound? Play it.", "Can you make {x} make a sound?",
                  "Let me have a listen to {x}.", "I'd like some audio of {x}.", "Generate a sound for {x}."),
    "gen_video": ("Can you make me a little video of {x}?", "Animate {x} for me.", "I'd love a clip showing {x}.",
                  "Show me a movie of {x}.", "Create an animation with {x}.", "Make a moving picture of {x}."),
    "caption_image": ("What's in this?", "Can you tell me what's shown?", "What's this a picture of?",
                      "Describe what you see here.", "Which shape is in the image?", "What did I draw?"),
    "caption_audio": ("What's making that sound?", "Can you tell what this noise is?", "What do you think this is?",
                      "Describe the noise.", "What is it that I'm hearing?", "Which object makes this?"),
    "caption_video": ("What's going on here?", "Describe what happens.", "What's moving in this?",
                      "Tell me what the video is about.", "Which way is it going?", "Caption the video."),
    "image_to_audio": ("How would this one sound?", "Play me the sound of this picture.", "Let me hear the picture.",
                       "What sound goes with this?"),
    "audio_to_image": ("Show me a picture of what's making this sound.", "Draw whatever this is.",
                       "What would this look like? Make a picture.", "Draw me the thing making this noise."),
    "image_audio_to_video": ("Animate this shape {m}, in the colour of the sound.",
                             "Video please: the shape from the picture, coloured like the sound, {m}.",
                             "Make a clip where this shape goes {m}, coloured like this sound."),
    "subject_image": ("Draw this again but {c}, {w}.", "Same thing, only {c} and {w}.",
                      "Show this one {c}, {w} this time."),
    "joint_image_audio": ("Draw {x} and play it too.", "I want a picture of {x} and its sound.",
                          "Show me {x} and how it sounds."),
    "icl_intro": ("Here's what I mean.", "See the examples.", "Look at how these change."),
    "icl_query": ("Do that with this one too.", "Now this one, same change.", "Same for this one?"),
    "round": ("Great, now ", "Cool. ", "Next "),
    "two": ("{a} and {b} as well", "{a} and also please {b}"),
    "two_values": ("Make it {u} and also {v}.", "Can you make it {u} and {v} please?"),
}
HELDOUT_EDITS: dict[str, dict[str, tuple[str, ...]]] = {
    "image": {"colour": ("make it {v} now", "I'd like it in {v}", "change it to {v} please", "colour it in {v}"),
              "shape": ("make it into {a} {v}", "change it to {a} {v}", "turn it into {a} {v} please"),
              "size_large": ("make it much bigger", "can it be bigger", "increase the size"),
              "size_small": ("make it much smaller", "can it be smaller", "decrease the size"),
              "position": ("stick it {w}", "move it all the way {t}", "can you put it {w}")},
    "audio": {"colour": ("make it {v} now", "change the pitch so it's {v}"),
              "pitch_up": ("make it higher",), "pitch_down": ("make it lower",),
              "shape": ("make it sound more like {a} {v}", "change it into {a} {v} sound"),
              "size_large": ("make it a lot louder", "volume up please"),
              "size_small": ("make it a lot quieter", "volume down please")},
}
HELDOUT_POLITE = {"before": ("Hey you, ", "Okay so ", "Hi again! "), "after": (" Thx!", " Many thanks.")}
HELDOUT_OOS_NOUNS = ("giraffe", "spaceship", "pirate", "octopus", "volcano", "snowman", "tiger", "laptop", "dinosaur",
                     "butterfly")
HELDOUT_OOS_TOPICS = ("the ocean", "my dog", "summer holidays", "a rainy day", "space")
HELDOUT_OOS: dict[str, tuple[str, ...]] = {
    "greeting": ("Hey!", "Hello, anyone there?", "Morning!", "hi :)", "Good evening to you."),
    "self": ("What exactly are you?", "What can you make?", "Who built you?", "Can you explain what you do?",
             "What are you for?", "Do you have a name?"),
    "object": ("Draw a {n} please.", "Make me a picture of a {n}.", "Can you show a {n}?", "Play a {n} sound.",
               "Make a video of a {n} jumping.", "Paint a green {n}.", "What noise does a {n} make?"),
    "creative": ("Write me a poem about {t}.", "Tell a short story about {t}.", "Write a song on {t}."),
    "language": ("Hallo! Wie heißt du?", "Bonsoir, tu peux dessiner ?", "¿Qué puedes hacer?", "Come ti chiami?",
                 "Dibuja un cuadrado rojo, por favor.", "Zeichne ein Dreieck."),
    "arithmetic": ("What's {a} plus {b}?", "How much is {a} times {b}?", "{a} - {b} = ?", "Add {a} and {b}."),
    "knowledge": ("What is the tallest building in the world?", "Who wrote Hamlet?", "How do I bake bread?",
                  "What's the time in Tokyo?", "Tell me the news.", "How does a car engine work?"),
}


def _second_sets() -> None:
    for kind, more in TRAIN2_MORE.items():
        FRAMES[kind]["train2"] = FRAMES[kind]["train2"] + more
    for kind, frames in HELDOUT.items():
        FRAMES[kind]["heldout"] = frames
    for modality, table in HELDOUT_EDITS.items():
        for attr, frames in table.items():
            EDIT_FRAMES[modality][attr]["heldout"] = frames
    for where, words in HELDOUT_POLITE.items():
        POLITE[where]["heldout"] = words
    OOS_NOUNS["heldout"], OOS_TOPICS["heldout"] = HELDOUT_OOS_NOUNS, HELDOUT_OOS_TOPICS
    for cat, frames in HELDOUT_OOS.items():
        OOS_FRAMES[cat]["heldout"] = frames


_second_sets()
