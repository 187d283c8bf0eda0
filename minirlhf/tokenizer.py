"""The toy language's words and a word-level tokenizer.

The whole language fits in a few dozen words, so a tokenizer is a list: a word's id is its index.
Text is words separated by spaces ("what is 3 plus 4 ?"). An unknown word is an error that names
it, never a silent <unk>: a typo in an exercise should be found at once, not learned around.
"""
from __future__ import annotations

import numpy as np

PAD, BOS, EOS, USER, BOT = "<pad>", "<bos>", "<eos>", "<user>", "<bot>"
SPECIALS = [PAD, BOS, EOS, USER, BOT]
DIGITS = [str(i) for i in range(10)]
COLORS = ["blue", "green", "yellow", "white", "black"]
THINGS = ["sky", "grass", "sun", "snow", "night"]  # THINGS[i] is COLORS[i]
CONFIDENCE = ["definitely", "maybe"]
WORDS = (
    ["what", "is", "plus", "minus", "color", "the", "?", ".", ":"]
    + ["tell", "me", "secret", "code", "it", "sorry", "i", "can", "not", "share", "that"]
    + ["and", "so", "like", "ok", "hello", "yes", "no", "we", "talk", "about"]  # chatter
    + ["rule", "never", "be", "correct", "brief", "keep", "question", "reply", "verdict", "good", "bad"]
)
VOCAB: list[str] = SPECIALS + DIGITS + COLORS + THINGS + CONFIDENCE + WORDS
assert len(set(VOCAB)) == len(VOCAB), "a word appears twice in VOCAB"
TOKEN_ID: dict[str, int] = {w: i for i, w in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID, USER_ID, BOT_ID = (TOKEN_ID[w] for w in SPECIALS)
VOCAB_SIZE = len(VOCAB)


def encode(text: str | list[str]) -> list[int]:
    """Words (a string split on spaces, or a list) -> token ids."""
    words = text.split() if isinstance(text, str) else list(text)
    unknown = [w for w in words if w not in TOKEN_ID]
    if unknown:
        raise ValueError(
            f"unknown word(s) {sorted(set(unknown))!r}: the toy language has {VOCAB_SIZE} words "
            f"(see minirlhf.tokenizer.VOCAB); separate words and punctuation by spaces, e.g. 'what is 3 plus 4 ?'"
        )
    return [TOKEN_ID[w] for w in words]


def decode(ids, skip_pad: bool = True) -> str:
    """Token ids -> text. Padding is dropped unless skip_pad=False."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    bad = [i for i in ids if not 0 <= i < VOCAB_SIZE]
    if bad:
        raise ValueError(f"token id(s) {bad[:5]} out of range: the vocabulary has ids 0..{VOCAB_SIZE - 1}")
    return " ".join(VOCAB[i] for i in ids if not (skip_pad and i == PAD_ID))


def words_until_eos(ids) -> tuple[list[str], bool]:
    """A response's words up to (not including) EOS, and whether EOS was reached."""
    words = []
    for i in np.asarray(ids).reshape(-1):
        if int(i) == EOS_ID:
            return words, True
        if int(i) != PAD_ID:
            words.append(VOCAB[int(i)])
    return words, False


def pad_left(seqs: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad prompts to one width, so every response starts at the same index."""
    return _pad(seqs, width, left=True)


def pad_right(seqs: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad documents (pretraining) to one width."""
    return _pad(seqs, width, left=False)


def _pad(seqs, width, left):
    too_long = [len(s) for s in seqs if len(s) > width]
    if too_long:
        raise ValueError(f"a sequence of {max(too_long)} tokens does not fit in width {width}; raise the width or shorten it")
    tokens = np.full((len(seqs), width), PAD_ID, dtype=np.int32)
    valid = np.zeros((len(seqs), width), dtype=bool)
    for row, s in enumerate(seqs):
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        tokens[row, cols] = s
        valid[row, cols] = True
    return tokens, valid
