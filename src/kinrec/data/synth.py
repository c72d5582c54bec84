"""Seeded synthetic datasets for scale tests, written as a split folder.

:func:`generate` writes ``NAME.{train,valid,test}.inter`` (RecBole benchmark layout, read by
``kinrec benchmark --split-dir`` and ``kinrec train --split-dir``) and, optionally,
``NAME.item`` (item texts), ``NAME.kg`` + ``NAME.link`` (a knowledge graph) and
``NAME.cold_items.txt`` (new items). Everything is drawn from ``seed``: the same arguments give
the same files, byte for byte.

What the data holds, so that every view has something to learn:

* **Topics.** Every item belongs to one of ``topics`` latent topics of mixed sizes
  (Dirichlet(2) shares). Item popularity follows a Zipf law (exponent 0.9) over a random
  order of the whole catalogue.
* **Users** mix one to three favourite topics: 80% of their events are drawn from those
  topics by popularity, the rest from the whole catalogue by popularity. Activity is
  log-normal, at least 5 events, at most a quarter of the catalogue. The draw order is the
  time order, so co-occurrences (and co-occurrences close in time) carry the topic signal.
* **Item text** is a title of 4 to 7 made-up words: each word comes from its topic's own
  vocabulary (30 words) with probability 0.6, else from 200 noise words shared by all
  topics. Items of one topic share words; items of different topics mostly do not.
* **Knowledge graph.** Each item is an entity (``NAME.link``) with facts (``NAME.kg``):
  ``has_genre`` (three genres per topic; the item's own topic's with probability 0.85, any
  other genre otherwise), ``created_by`` (creators of about four items each, always within
  one topic; 90% of items have one), and two relations of pure noise, ``released_in`` (one of
  75 years) and ``tagged`` (one of ``max(10, items // 50)`` tags), drawn regardless of topic.
* **New items** (``new_items`` > 0): that share of the catalogue, drawn at random, is
  published after the training period. All its events go to test (after the user's other
  events), none to train or valid, and the items are listed in ``NAME.cold_items.txt``, as
  in ``benchmarks/ml-1m-cold`` (README: "New items in kinformer").

The split is per user in time order (RecBole's ordered split): the last 10% of each user's
events (rounded, at least one) is test, the 10% before it valid, the rest train. Every item
of the catalogue is in the files: an item no user drew gets one train row from a random
user (new items instead are listed in ``NAME.item``, which is then always written).

The interaction count lands close to ``interactions``, within a few percent: a user never
holds an item twice (a user left short by duplicates draws again), items that no user drew
add a row each, and with ``new_items`` a user left with under three older events is left
out. Users are ``u0 ... u{U-1}``, items ``i0 ... i{I-1}``; timestamps are integers that order
each user's events.

Memory and time grow linearly: users are drawn in blocks (a few million draws each) and the
files are written in chunks. On two cores, 100,000 items with 3 million interactions take
about 6 s and 0.6 GiB, a million items with 30 million interactions about 70 s and 1.2 GiB.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

FROM_TOPIC = 0.8  # share of a user's draws from their favourite topics
ZIPF = 0.9
MIN_EVENTS = 5
MAX_TOPICS = 60
TOPIC_WORDS = 30
NOISE_WORDS = 200
TOPIC_WORD_SHARE = 0.6
TITLE_WORDS = (4, 7)
GENRES_PER_TOPIC = 3
GENRE_FIDELITY = 0.85
CREATOR_ITEMS = 4
CREATOR_SHARE = 0.9
YEARS = (1950, 2024)
BLOCK_DRAWS = 1 << 22  # draws per block of users: bounds the memory of the generator
WRITE_CHUNK = 1 << 20  # rows per chunk written
PARTS = ("train", "valid", "test")
SIDE_FILES = ("item", "kg", "link", "cold_items.txt")


@dataclass
class SynthResult:
    """What :func:`generate` wrote: row counts, files, and the truth behind the data."""

    folder: Path
    name: str
    rows: dict[str, int]
    """``train``, ``valid``, ``test`` rows, and ``users`` and ``items`` in the files."""
    files: list[Path]
    seconds: float
    item_topic: np.ndarray = field(repr=False)
    """Each item's latent topic (item ``i{k}`` is row ``k``)."""
    new_items: np.ndarray = field(repr=False)
    """Indices of the new items (empty unless ``new_items`` > 0)."""

    @property
    def interactions(self) -> int:
        return self.rows["train"] + self.rows["valid"] + self.rows["test"]


def default_topics(n_items: int) -> int:
    """60 latent topics, fewer for small catalogues (about 20 items per topic)."""
    return int(min(MAX_TOPICS, max(2, n_items // 20)))


def check_sizes(users: int, items: int, interactions: int, new_items: float = 0.0) -> None:
    """Raise ``ValueError`` with the reason when the sizes cannot make a dataset."""
    for label, value in (("users", users), ("items", items), ("interactions", interactions)):
        if value <= 0:
            raise ValueError(f"{label} must be a positive number, got {value}")
    if items < 4 * MIN_EVENTS:
        raise ValueError(
            f"items must be at least {4 * MIN_EVENTS}: a user's history holds at least "
            f"{MIN_EVENTS} items and at most a quarter of the catalogue, got {items}"
        )
    if interactions > users * items:
        raise ValueError(
            f"{interactions:,} interactions cannot fit: {users:,} users x {items:,} items "
            f"= {users * items:,} user-item pairs, and a user interacts with an item at most once"
        )
    if interactions > users * (items // 4):
        raise ValueError(
            f"{interactions:,} interactions are too dense: a user's history holds at most a "
            f"quarter of the catalogue ({items // 4:,} items), so {users:,} users hold at "
            f"most {users * (items // 4):,}; ask for more users or items"
        )
    if interactions < MIN_EVENTS * users:
        raise ValueError(
            f"{interactions:,} interactions are too few for {users:,} users: every user needs "
            f"at least {MIN_EVENTS} (train, valid and test rows), so ask for at least "
            f"{MIN_EVENTS * users:,} interactions or at most {interactions // MIN_EVENTS:,} users"
        )
    if not 0 <= new_items < 1:
        raise ValueError(f"the share of new items must be in [0, 1), got {new_items}")


# ------------------------------------------------------------------------------ interactions
@dataclass
class _Events:
    users: np.ndarray  # int32, ascending
    items: np.ndarray  # int32
    position: np.ndarray  # int32: rank in the user's time order
    part: np.ndarray  # int8: 0 train, 1 valid, 2 test


def _catalogue(rng: np.random.Generator, n_items: int, n_topics: int):
    topic = rng.choice(n_topics, size=n_items, p=rng.dirichlet(np.full(n_topics, 2.0)))
    popularity = 1.0 / np.arange(1, n_items + 1) ** ZIPF
    popularity = popularity[rng.permutation(n_items)]
    by_topic = [np.flatnonzero(topic == t) for t in range(n_topics)]
    cum_topic = [np.cumsum(popularity[ids]) / popularity[ids].sum() for ids in by_topic]
    cum_all = np.cumsum(popularity) / popularity.sum()
    return topic, by_topic, cum_topic, cum_all


def _event_counts(
    rng: np.random.Generator, n_users: int, n_items: int, target: int, train_target: bool
) -> np.ndarray:
    """Events per user: log-normal activity, at least ``MIN_EVENTS``, at most a quarter of the
    catalogue, scaled so that the total comes to ``target``.

    With ``train_target`` the train part is aimed at with three rescaling steps (the recipe
    of ``benchmarks/large_catalogue.py``, kept so that its split stays the same); otherwise
    the total is found by bisection, as close as whole events allow."""
    activity = rng.lognormal(0.0, 0.9, size=n_users)
    share = activity / activity.sum()

    def events(total: float) -> np.ndarray:
        counts = np.maximum(MIN_EVENTS, np.round(share * total))
        return np.minimum(counts.astype(np.int64), n_items // 4)

    if not train_target:
        low, high = 0.0, float(target)
        while events(high).sum() < target and high < target * 1e9:
            high *= 2
        for _ in range(100):
            middle = (low + high) / 2
            if events(middle).sum() < target:
                low = middle
            else:
                high = middle
            if high - low < 1e-9 * high:
                break
        counts = events(high)
        return counts

    def train_part(counts: np.ndarray) -> int:
        held = 2 * np.floor(counts * 0.1 + 0.5).astype(np.int64).clip(1)
        return int((counts - held).sum())

    total: float = int(target / 0.8)
    counts = events(total)
    for _ in range(3):  # short histories hold out more than 20%: aim the train part
        total *= target / train_part(counts)
        counts = events(total)
    return counts


@dataclass
class _Tastes:
    n_fav: np.ndarray  # 1 to 3 favourite topics per user
    favourites: np.ndarray  # (users, 3) topic ids
    catalogue: tuple
    n_items: int


def _draw_block(
    rng: np.random.Generator,
    user_ids: np.ndarray,
    draws: np.ndarray,
    limit: np.ndarray,
    tastes: _Tastes,
    existing: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``draws[k]`` draws for user ``user_ids[k]`` (ascending): each user's first
    ``limit[user]`` distinct items, in draw order, with their rank in that order. Pairs in
    ``existing`` (keys ``user * n_items + item``) are skipped."""
    _, by_topic, cum_topic, cum_all = tastes.catalogue
    n_items = tastes.n_items
    users = np.repeat(user_ids.astype(np.int64), draws)
    from_topic = rng.random(len(users)) < FROM_TOPIC
    slot = (rng.random(len(users)) * tastes.n_fav[users]).astype(np.int64)
    chosen_topic = tastes.favourites[users, slot]
    items = np.empty(len(users), dtype=np.int64)
    u = rng.random(len(users))
    picked = np.flatnonzero(from_topic)
    topic_of = chosen_topic[picked]
    order = np.argsort(topic_of, kind="stable")
    bounds = np.searchsorted(topic_of[order], np.arange(len(by_topic) + 1))
    for t in range(len(by_topic)):
        rows = picked[order[bounds[t] : bounds[t + 1]]]
        if len(rows):
            ids = by_topic[t]
            items[rows] = ids[np.searchsorted(cum_topic[t], u[rows]).clip(0, len(ids) - 1)]
    rest = ~from_topic
    items[rest] = np.searchsorted(cum_all, u[rest]).clip(0, n_items - 1)
    # first occurrence of each (user, item) pair, in draw order (the draw order is time)
    key = users * n_items + items
    _, first = np.unique(key, return_index=True)
    first.sort()
    if existing is not None:
        first = first[~np.isin(key[first], existing)]
    users, items = users[first], items[first]
    rank = np.arange(len(users)) - np.searchsorted(users, users)
    keep = rank < limit[users]
    return (
        users[keep].astype(np.int32),
        items[keep].astype(np.int32),
        rank[keep].astype(np.int32),
    )


def _draw_users(
    rngs,
    user_ids: np.ndarray,
    draws: np.ndarray,
    limit: np.ndarray,
    tastes: _Tastes,
    existing: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_draw_block` over blocks of at most about ``BLOCK_DRAWS`` draws (block ``b``
    draws from ``rngs(b)``), into arrays sized for ``limit`` rows per user."""
    size = int(limit[user_ids].sum())
    users = np.empty(size, np.int32)
    items = np.empty(size, np.int32)
    rank = np.empty(size, np.int32)
    ends = np.cumsum(draws)
    start, block, filled = 0, 0, 0
    while start < len(user_ids):
        stop = int(np.searchsorted(ends, ends[start] - draws[start] + BLOCK_DRAWS, "right"))
        stop = max(stop, start + 1)
        got = _draw_block(
            rngs(block), user_ids[start:stop], draws[start:stop], limit, tastes, existing
        )
        n = len(got[0])
        for target, values in zip((users, items, rank), got, strict=True):
            target[filled : filled + n] = values
        start, block, filled = stop, block + 1, filled + n
    return users[:filled], items[:filled], rank[:filled]


def _insert_rows(
    arrays: tuple[np.ndarray, ...], rows: tuple[np.ndarray, ...], before: bool
) -> tuple[np.ndarray, ...]:
    """Insert ``rows`` (users first, ascending) into ``arrays`` (users first, ascending),
    each before (or after) the rows of its user, keeping the order of both."""
    side = "left" if before else "right"
    at = np.searchsorted(arrays[0], rows[0], side)
    return tuple(np.insert(a, at, r) for a, r in zip(arrays, rows, strict=True))


def _draw_events(
    rng: np.random.Generator,
    seed: int,
    counts: np.ndarray,
    n_topics: int,
    catalogue,
    n_items: int,
    top_up: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every user's events: ``(users, items, position)``, by user, then time.

    Draws are twice a user's count (plus five); duplicates are dropped. With ``top_up``,
    users left short by duplicates draw again (fresh items only) until they have their
    count, up to four rounds; their extra events come last in their history."""
    n_users = len(counts)
    n_fav = rng.integers(1, 4, size=n_users)
    favourites = rng.integers(0, n_topics, size=(n_users, 3))
    sizes = np.array([len(ids) for ids in catalogue[1]])
    if (sizes == 0).any():  # a small catalogue may leave a topic empty: nobody favours it
        filled = np.flatnonzero(sizes)
        remap = np.arange(n_topics)
        remap[sizes == 0] = filled[np.arange(n_topics - len(filled)) % len(filled)]
        favourites = remap[favourites]
    tastes = _Tastes(n_fav, favourites, catalogue, n_items)
    draws = (counts * 2 + 5).astype(np.int64)  # more than needed: duplicates are dropped

    def block_rng(block: int) -> np.random.Generator:
        # the first block draws from the main generator, later ones from their own
        return rng if block == 0 else np.random.default_rng([seed, 100, block])

    events = _draw_users(block_rng, np.arange(n_users), draws, counts, tastes)
    for round_ in range(4 if top_up else 0):
        users, items, _ = events
        have = np.bincount(users, minlength=n_users)
        deficit = counts - have
        short = np.flatnonzero(deficit > 0)
        if not len(short):
            break
        is_short = np.zeros(n_users, dtype=bool)
        is_short[short] = True
        rows = is_short[users]
        existing = np.sort(users[rows].astype(np.int64) * n_items + items[rows])
        del rows
        more = (deficit[short] * (4 << round_) + 5).astype(np.int64)
        extra_u, extra_i, rank = _draw_users(
            lambda block, r=round_: np.random.default_rng([seed, 200 + r, block]),
            short,
            more,
            deficit,
            tastes,
            existing,
        )
        extra_p = (have[extra_u] + rank).astype(np.int32)
        events = _insert_rows(events, (extra_u, extra_i, extra_p), before=False)
    return events


def _split_events(
    users: np.ndarray,
    items: np.ndarray,
    position: np.ndarray,
    n_users: int,
    is_new: np.ndarray | None,
) -> _Events:
    """Each user's events in time order: the last 10% (rounded, at least one) test, the 10%
    before valid, the rest train (RecBole's ordered split). Events of new items go to test,
    after the user's other events."""
    if is_new is not None:
        new_row = is_new[items]
        size = np.bincount(users[~new_row], minlength=n_users)
        # a user needs three events of items published before the split to keep a train row
        keep = size[users] >= 3
        users, items, position, new_row = users[keep], items[keep], position[keep], new_row[keep]
        before = np.cumsum(new_row) - new_row  # new-item rows before each row, overall
        new_rank = before - before[np.searchsorted(users, users)]
        # warm rows keep their order first, then the new-item rows in theirs
        position = np.where(new_row, size[users] + new_rank, position - new_rank)
        order = np.argsort(users.astype(np.int64) * (int(position.max()) + 1) + position)
        users, items, position, new_row = (
            users[order],
            items[order],
            position[order].astype(np.int32),
            new_row[order],
        )
    else:
        size = np.bincount(users, minlength=n_users)
    n_held = np.floor(size * 0.1 + 0.5).astype(np.int64).clip(1)  # test, and as many valid
    to_test, to_valid = (size - n_held).astype(np.int32), (size - 2 * n_held).astype(np.int32)
    part = (position >= to_valid[users]).astype(np.int8) + (position >= to_test[users])
    if is_new is not None:
        part[new_row] = 2
    return _Events(users, items, position, part)


def _fill_catalogue(
    rng: np.random.Generator,
    events: _Events,
    n_users: int,
    n_items: int,
    is_new: np.ndarray | None,
) -> _Events:
    """Items nobody trained on (new items aside) get one train row from a random user,
    first in that user's history."""
    users, items = events.users, events.items
    trained = np.zeros(n_items, dtype=bool)
    trained[items[events.part == 0]] = True
    if is_new is not None:
        trained |= is_new
    extra_users, extra_items = [], []
    for _ in range(5):  # a drawn pair that already exists (in valid or test) is drawn again
        missing = np.flatnonzero(~trained)
        if not len(missing):
            break
        candidates = rng.integers(0, n_users, size=len(missing))
        wanted = np.zeros(n_items, dtype=bool)
        wanted[missing] = True
        rows = wanted[items]
        existing = users[rows].astype(np.int64) * n_items + items[rows]
        fresh = ~np.isin(candidates * n_items + missing, existing)
        extra_users.append(candidates[fresh])
        extra_items.append(missing[fresh])
        trained[missing[fresh]] = True
    if not extra_items:
        return events
    extra_u = np.concatenate(extra_users)
    order = np.argsort(extra_u, kind="stable")
    extra = (
        extra_u[order].astype(np.int32),
        np.concatenate(extra_items)[order].astype(np.int32),
        np.full(len(order), -1, np.int32),
        np.zeros(len(order), np.int8),
    )
    arrays = (users, items, events.position, events.part)
    return _Events(*_insert_rows(arrays, extra, before=True))


# ------------------------------------------------------------------------------ writing
def _names(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}{i}" for i in range(n)], dtype=object)


def _tsv_chunk(f, columns: list[np.ndarray]) -> None:
    frame = pd.DataFrame({str(k): c for k, c in enumerate(columns)})
    frame.to_csv(f, sep="\t", header=False, index=False, lineterminator="\n")


def _write_tsv(path: Path, header: list[str], columns: list[np.ndarray]) -> None:
    """A tab-separated file with a typed header, written in chunks."""
    n = len(columns[0])
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(header) + "\n")
        for start in range(0, n, WRITE_CHUNK):
            _tsv_chunk(f, [c[start : start + WRITE_CHUNK] for c in columns])


def _write_interactions(
    folder: Path, name: str, events: _Events, n_users: int, n_items: int
) -> dict[str, int]:
    """The three ``.inter`` files, in one pass over the events (by user, then time)."""
    users, items, position, part = events.users, events.items, events.position, events.part
    stride = max(10_000, int(position.max(initial=0)) + 2)
    user_names, item_names = _names("u", n_users), _names("i", n_items)
    header = "user_id:token\titem_id:token\ttimestamp:float\n"
    paths = [folder / f"{name}.{label}.inter" for label in PARTS]
    files = [open(path, "w", encoding="utf-8", newline="") for path in paths]  # noqa: SIM115
    try:
        for f in files:
            f.write(header)
        for start in range(0, len(users), WRITE_CHUNK):
            chunk = slice(start, start + WRITE_CHUNK)
            u, i, p, which = users[chunk], items[chunk], position[chunk], part[chunk]
            stamps = 1_000_000 + u.astype(np.int64) * stride + p + 1
            for index, f in enumerate(files):
                pick = which == index
                _tsv_chunk(f, [user_names[u[pick]], item_names[i[pick]], stamps[pick]])
    finally:
        for f in files:
            f.close()
    rows = {label: int(np.count_nonzero(part == k)) for k, label in enumerate(PARTS)}
    rows["users"] = int(np.count_nonzero(np.bincount(users, minlength=n_users)))
    rows["items"] = int(np.count_nonzero(np.bincount(items, minlength=n_items)))
    return rows


def _pseudo_words(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct made-up words of three syllables, capitalised."""
    consonants = np.array(list("bcdfghjklmnprstvz"))
    vowels = np.array(list("aeiou"))
    syllables = np.char.add(consonants[:, None], vowels[None, :]).ravel()
    k = len(syllables)
    picks = rng.choice(k**3, size=n, replace=False)
    words = np.char.add(
        np.char.add(syllables[picks // k**2], syllables[(picks // k) % k]), syllables[picks % k]
    )
    return np.char.capitalize(words).astype(object)


def item_titles(rng: np.random.Generator, topic: np.ndarray, n_topics: int) -> np.ndarray:
    """A title per item: 4 to 7 words, each from the item's topic vocabulary (probability
    0.6) or from the shared noise words."""
    n = len(topic)
    words = _pseudo_words(rng, n_topics * TOPIC_WORDS + NOISE_WORDS)
    words = np.append(words, "")  # the last index: no word
    slots = TITLE_WORDS[1]
    from_topic = rng.random((n, slots)) < TOPIC_WORD_SHARE
    topic_word = topic[:, None] * TOPIC_WORDS + rng.integers(0, TOPIC_WORDS, (n, slots))
    noise_word = n_topics * TOPIC_WORDS + rng.integers(0, NOISE_WORDS, (n, slots))
    index = np.where(from_topic, topic_word, noise_word)
    length = rng.integers(TITLE_WORDS[0], TITLE_WORDS[1] + 1, size=n)
    index[np.arange(slots)[None, :] >= length[:, None]] = len(words) - 1
    title = pd.Series(words[index[:, 0]])
    rest = [pd.Series(words[index[:, j]]) for j in range(1, slots)]
    return title.str.cat(rest, sep=" ").str.strip().to_numpy(dtype=object)


def knowledge_graph(
    rng: np.random.Generator, topic: np.ndarray, n_topics: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triples ``(item index, relation, tail entity)`` as three arrays: genres tied to the
    topic, creators of small groups within a topic, and two relations of noise."""
    n = len(topic)
    item = np.arange(n)
    # genres: the topic's own (probability 0.85) or any other
    own = topic * GENRES_PER_TOPIC + rng.integers(0, GENRES_PER_TOPIC, n)
    other = rng.integers(0, n_topics * GENRES_PER_TOPIC, n)
    genre = np.where(rng.random(n) < GENRE_FIDELITY, own, other)
    genre_names = np.array(
        [f"genre{t}_{k}" for t in range(n_topics) for k in range(GENRES_PER_TOPIC)], dtype=object
    )
    # creators: items of a topic in random order, cut into groups of CREATOR_ITEMS
    order = np.lexsort((rng.random(n), topic))
    start_of_topic = np.searchsorted(topic[order], topic[order])
    group = (np.arange(n) - start_of_topic) // CREATOR_ITEMS
    group_key = topic[order].astype(np.int64) * (n + 1) + group
    creator = np.empty(n, dtype=np.int64)
    creator[order] = np.unique(group_key, return_inverse=True)[1]
    has_creator = rng.random(n) < CREATOR_SHARE
    # noise: a year and a tag drawn regardless of everything else
    year = rng.integers(YEARS[0], YEARS[1] + 1, n)
    tag = rng.integers(0, max(10, n // 50), n)
    heads = np.concatenate([item, item[has_creator], item, item])
    relations = np.repeat(
        np.array(["has_genre", "created_by", "released_in", "tagged"], dtype=object),
        [n, int(has_creator.sum()), n, n],
    )
    tails = np.concatenate(
        [
            genre_names[genre],
            _prefixed("creator", creator[has_creator]),
            _prefixed("year", year),
            _prefixed("tag", tag),
        ]
    )
    return heads, relations, tails


def _prefixed(prefix: str, values: np.ndarray) -> np.ndarray:
    return (prefix + pd.Series(values).astype(str)).to_numpy(dtype=object)


# ------------------------------------------------------------------------------ entry points
def _prepare_folder(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    others = sorted(
        p.name[: -len(".train.inter")]
        for p in folder.glob("*.train.inter")
        if p.name != f"{name}.train.inter"
    )
    if others:
        raise ValueError(
            f"{folder} already holds the split {others[0]!r}: a split folder holds one "
            "dataset (choose another --out, or --name "
            f"{others[0]})"
        )
    for suffix in SIDE_FILES:  # files of an earlier run that this one may not write
        (folder / f"{name}.{suffix}").unlink(missing_ok=True)


def generate(
    folder: Path | str,
    *,
    users: int,
    items: int,
    interactions: int,
    seed: int = 2026,
    name: str = "synth",
    new_items: float = 0.0,
    text: bool = True,
    kg: bool = True,
    topics: int | None = None,
    train_rows: int | None = None,
) -> SynthResult:
    """Write a synthetic split into ``folder`` (see the module's documentation).

    ``interactions`` is the total to aim at (train, valid and test rows); ``train_rows``, when
    given, aims the train part instead, with the recipe of ``benchmarks/large_catalogue.py``
    (kept so that its split stays the same: users left short by duplicates do not draw
    again, so dense data lands a few percent below). ``text`` writes ``NAME.item`` with a
    title per item, ``kg`` writes ``NAME.kg`` and ``NAME.link``; ``new_items`` is the share of
    the catalogue published after training (``NAME.cold_items.txt``). ``topics`` defaults to
    :func:`default_topics`. Raises ``ValueError`` for sizes that cannot make a dataset.
    """
    start = time.perf_counter()
    folder = Path(folder)
    check_sizes(users, items, interactions, new_items)
    n_topics = default_topics(items) if topics is None else int(topics)
    if not 1 <= n_topics <= items:
        raise ValueError(f"topics must be between 1 and the number of items, got {n_topics}")
    if not name or any(c in name for c in "/\\\t\n ."):
        raise ValueError(f"name must be a plain word (no spaces, dots or slashes), got {name!r}")
    _prepare_folder(folder, name)

    rng = np.random.default_rng(seed)
    catalogue = _catalogue(rng, items, n_topics)
    topic = catalogue[0]
    target = interactions if train_rows is None else train_rows
    aim_train = train_rows is not None
    counts = _event_counts(rng, users, items, target, aim_train)
    u, i, position = _draw_events(
        rng, seed, counts, n_topics, catalogue, items, top_up=not aim_train
    )
    is_new, new_index = None, np.empty(0, dtype=np.int64)
    if new_items > 0:
        n_new = max(1, round(new_items * items))
        new_index = np.sort(np.random.default_rng([seed, 3]).choice(items, n_new, replace=False))
        is_new = np.zeros(items, dtype=bool)
        is_new[new_index] = True
    events = _split_events(u, i, position, users, is_new)
    del u, i, position
    events = _fill_catalogue(rng, events, users, items, is_new)
    rows = _write_interactions(folder, name, events, users, items)
    del events
    files = [folder / f"{name}.{part}.inter" for part in PARTS]

    item_names = _names("i", items)
    if text or is_new is not None:
        header, columns = ["item_id:token"], [item_names]
        if text:
            header.append("title:token_seq")
            columns.append(item_titles(np.random.default_rng([seed, 1]), topic, n_topics))
        _write_tsv(folder / f"{name}.item", header, columns)
        files.append(folder / f"{name}.item")
    if kg:
        heads, relations, tails = knowledge_graph(np.random.default_rng([seed, 2]), topic, n_topics)
        entity_names = _prefixed("e", np.arange(items))
        _write_tsv(
            folder / f"{name}.kg",
            ["head_id:token", "relation_id:token", "tail_id:token"],
            [entity_names[heads], relations, tails],
        )
        _write_tsv(
            folder / f"{name}.link",
            ["item_id:token", "entity_id:token"],
            [item_names, entity_names],
        )
        files += [folder / f"{name}.kg", folder / f"{name}.link"]
    if is_new is not None:
        path = folder / f"{name}.cold_items.txt"
        path.write_text("\n".join(item_names[new_index]) + "\n", encoding="utf-8")
        files.append(path)
    if is_new is not None or text:
        rows["items"] = items  # the item file lists the whole catalogue
    return SynthResult(
        folder=folder,
        name=name,
        rows=rows,
        files=files,
        seconds=time.perf_counter() - start,
        item_topic=topic,
        new_items=new_index,
    )


__all__ = ["SynthResult", "check_sizes", "default_topics", "generate"]
