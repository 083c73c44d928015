"""Harmonize a melody: the model writes alto, tenor and bass under a soprano that is given and kept.

BachBot showed that a left-to-right model over tokens can harmonize by fixing the soprano's tokens and
sampling the rest. Here each melody note becomes one four-voice frame of the encoding (encoding 2): the
shift to its onset (given), the bass, tenor and alto as new attacks (sampled, lowest first, as frames list
pitches), the melody's attack (given) and the closing bar (given); a rest in the melody is an empty frame
and the piece closes with `<end>` after the last note. The melody is moved to C major or A minor, where the
network learned, and the result back to the key asked for. The network is stepped one token at a time from
Python, and every sampled pitch is masked to where its voice may go: below the voice above it, within its
range, within an octave of its upper neighbour (bass excepted), without consecutive fifths or octaves
against the chord before, and, on the last chords, to a cadence.

Because frames list the lowest pitch first, the model chooses the bass before it reads the melody note
above it. Two things make up for it. A harmony prior learned from the training chorales
(`bot.model.harmony_prior`), which reads the whole melody, is multiplied into the network's distribution
of each lower voice while it samples (a product of experts): on the validation chorales the network alone
puts Bach's bass under a quarter of the beats, the prior alone under about 47%, the two together above
40% with chords as often triads or sevenths as Bach's or more. And every chord is proposed by `K`
particles at once, resampled by how likely the model finds the given tokens after each proposal
(sequential Monte Carlo): the harmony that survives is the one under which the model itself would have
sung this melody, its rests and its ending. More particles make more of the chords triads or sevenths.

The network and the harmony prior hear where each frame falls in the melody's bar (`Melody.meter`: the
file's time signature, else the meter its onsets suggest, a pickup included), and the .mid carries that
time signature. The output keeps the melody exactly: onsets, durations and pitches are copied, never
decoded from tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bot.errors import ModelNotFound
from bot.model.composer import Composition
from bot.model.harmony_prior import NONE, shipped
from bot.model.steps import NumpySteps, Steps
from bot.music.encoding import PIANO_LOW, Vocabulary
from bot.music.events import GRID, Event, Piece, transpose
from bot.music.keys import REFERENCE, Key, melody_key
from bot.music.melody import BadMelody, Melody, fold_line, moved_text
from bot.music.meter import Meter
from bot.music.perform import seed_style
from bot.options import Options

log = logging.getLogger(__name__)

# Where each lower voice may sound (MIDI pitches), a little wider than the chorales use them.
RANGES = {"alto": (53, 77), "tenor": (46, 70), "bass": (34, 64)}
MAX_GAP = 12  # soprano-alto and alto-tenor at most an octave apart, as the textbooks ask
MAX_BASS_GAP = 24  # tenor-bass may open wider
# The harmony prior's exponent for the bass in the product of experts with the network (0: the network
# alone), chosen by `etude eval --harmony` on the validation chorales (see the README).
PRIOR_WEIGHT = 4.0
# The same for the tenor and alto: more makes more triads than Bach wrote, and fewer of his basses.
INNER_WEIGHT = 0.25
RELAX_PENALTY = 10.0  # nats off a particle's weight for each constraint it had to give up


# -- the cadence -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cadence:
    """Pitch classes the last chord (and the bass of the one before) must take."""

    final_bass: int
    final_chord: frozenset[int]
    penultimate_bass: int | None


def cadence_for(last: int, before: int | None, tonic: int, minor: bool) -> Cadence | None:
    """The cadence a chorale would end this melody with, in the key of `tonic`.

    Ending on a note of the tonic triad: a full close on I (in minor the major third is allowed too, the
    chorales' Picardy third), its bass prepared by the dominant when the note before fits V or V7. Ending on
    a note of the dominant triad: a half close on V. Otherwise the diatonic triad on IV, vi or ii that holds
    the note, with no preparation. A chromatic last note leaves the ending to the model.
    """
    last, third = last % 12, 3 if minor else 4
    triad = {
        "I": (0, third, 7),
        "V": (7, 11, 2),
        "IV": (5, 5 + third, 0),
        "vi": (8, 0, 3) if minor else (9, 0, 4),
        "ii": (2, 5, 8) if minor else (2, 5, 9),
    }
    for name in ("I", "V", "IV", "vi", "ii"):
        pcs = {(tonic + i) % 12 for i in triad[name]}
        if last not in pcs:
            continue
        if name == "I":
            pcs |= {(tonic + 3) % 12, (tonic + 4) % 12} if minor else set()
            dominant = {(tonic + i) % 12 for i in (7, 11, 2, 5)}
            prepared = before is not None and before % 12 in dominant
            return Cadence(tonic, frozenset(pcs), (tonic + 7) % 12 if prepared else None)
        root = (tonic + triad[name][0]) % 12
        return Cadence(root, frozenset(pcs), None)
    return None


# -- masks ------------------------------------------------------------------------------------------------
def _voice_masks(
    vocab: Vocabulary, melody: int, lower: np.ndarray, voice: str, strict: bool, pcs: frozenset[int] | None
) -> np.ndarray:
    """(k, V) allowed pitch tokens for `voice` under `melody`, given the voices already chosen (k, j)."""
    k = len(lower)
    pitches = np.arange(vocab.pitch_low, vocab.pitch_high + 1)
    allowed = np.zeros((k, len(vocab)), dtype=bool)
    lo, hi = RANGES[voice] if strict else (vocab.pitch_low, vocab.pitch_high)
    # Room for the voices still to come between this one and the melody, one semitone each at least.
    above = {"bass": 3, "tenor": 2, "alto": 1}[voice]
    ok = (pitches >= lo) & (pitches <= hi) & (pitches <= melody - above)
    if pcs is not None:
        ok &= np.isin(pitches % 12, list(pcs))
    if strict:
        # Leave room for the voices still to come above this one, each within its range and gaps.
        if voice == "bass":
            ok &= pitches <= RANGES["tenor"][1] - 1
            ok &= pitches >= melody - 2 * MAX_GAP - MAX_BASS_GAP
        elif voice == "tenor":
            ok &= pitches >= melody - 2 * MAX_GAP
        else:
            ok &= pitches >= melody - MAX_GAP
    for i in range(k):
        row = ok.copy()
        if lower.shape[1]:
            below = int(lower[i, -1])
            row &= pitches > below  # one pitch per voice: the encoding writes each pitch once per chord
            if strict and voice != "tenor":
                row &= pitches - below <= MAX_GAP
            elif strict:
                row &= pitches - below <= MAX_BASS_GAP
        allowed[i, _attacks(vocab)] = row
    return allowed


def _attacks(vocab: Vocabulary) -> slice:
    """The ids of attacks (`P`) on the pitches `vocab.pitch_low`..`vocab.pitch_high`, in that order."""
    return slice(vocab.pitch_id(vocab.pitch_low), vocab.pitch_id(vocab.pitch_high) + 1)


def _masked_sample(logp: np.ndarray, allowed: np.ndarray, temperature: float, u: np.ndarray) -> tuple:
    """One token per row from `logp` restricted to `allowed`; also log of the allowed tempered mass."""
    z = np.where(allowed, logp / temperature, -np.inf)
    top = z.max(axis=1, keepdims=True)
    p = np.exp(z - top)
    mass = p.sum(axis=1)
    cdf = np.cumsum(p, axis=1) / mass[:, None]
    pick = np.minimum((cdf <= u[:, None]).sum(axis=1), logp.shape[1] - 1)
    return pick, np.log(mass) + top[:, 0]


# -- the harmonizer ---------------------------------------------------------------------------------------
def harmonize_line(
    steps: Steps,
    vocab: Vocabulary,
    notes: Sequence[Event],
    mode: str,
    cadence: Cadence | None,
    temperature: float,
    rng: np.random.Generator,
    rules: bool = True,
    prior: tuple[np.ndarray, np.ndarray] | None = None,
    prior_weight: float = PRIOR_WEIGHT,
    inner_weight: float = INNER_WEIGHT,
) -> np.ndarray:
    """Alto, tenor and bass under each of `notes` (single pitches, no overlaps, in C major or A minor as
    `mode` says): an array (n, 3) of bass, tenor and alto.

    Rows are particles; after each chord they are resampled by the tempered probability the model gives
    the tokens that were given (the melody's attack, the closing bar, the shifts and rests before the next
    note, `<end>` after the last) times the mass the masks left it, and the survivor of the last chord is
    returned with its whole history. With `rules`, no voice may move in consecutive fifths or octaves
    with another (the textbooks' first rule, which the model alone breaks often).

    With `prior` (the tables `bot.model.harmony_prior.HarmonyPrior.tables` gives for `notes`: the bass's
    pitch class by the melody and the bass before, the tenor's and alto's by the soprano and the voices
    under them), each lower voice is drawn from the product of the network's distribution and the prior's
    to the power `prior_weight` (the bass) or `inner_weight` (tenor and alto), the product tempered by
    `temperature`, and the particles are weighted by its mass: the prior reads the melody note that the
    network has not seen yet when it chooses the voices under it.
    """
    k = steps.k
    n = len(notes)
    history = np.zeros((k, n, 3), dtype=np.int64)
    given = _given_tokens(vocab, notes)
    logp = steps.start(vocab.head(mode, "chorale"))
    rows = np.arange(k)
    for i, note in enumerate(notes):
        m = int(note.pitches[0])
        last = i == n - 1
        log_w = np.zeros(k)
        for token in given[i][0]:  # the shift to this note's frame (and a rest frame before it)
            log_w += logp[rows, token] / temperature
            logp = steps.feed(np.full(k, token), rows)
            rows = np.arange(k)
        chosen = np.zeros((k, 0), dtype=np.int64)
        # The chord before, when it ends where this one starts: parallels are heard only across a join.
        joined = i > 0 and abs(notes[i - 1].onset + notes[i - 1].duration - note.onset) < 1e-6
        before = (int(notes[i - 1].pitches[0]), history[:, i - 1]) if joined and rules else None
        for v, voice in enumerate(("bass", "tenor", "alto")):
            pcs = None
            if cadence is not None and last:
                pcs = frozenset({cadence.final_bass}) if voice == "bass" else cadence.final_chord
            elif (
                cadence is not None
                and cadence.penultimate_bass is not None
                and i == n - 2
                and voice == "bass"
            ):
                pcs = frozenset({cadence.penultimate_bass})
            # Masks from the strictest down, each row taking the first that leaves it a pitch: the last
            # chord keeps its cadence before the voice-leading rule, every other chord the rule first.
            if last:
                tries = [(True, pcs, True), (False, pcs, True), (True, pcs, False), (False, pcs, False)]
            else:
                tries = [(True, pcs, True), (False, pcs, True), (True, None, True), (False, None, True)]
            tries.append((False, None, False))
            allowed = np.zeros((k, len(vocab)), dtype=bool)
            for level, (strict, classes, rule) in enumerate(tries):
                empty = ~allowed.any(axis=1)
                if not empty.any():
                    break
                mask = _voice_masks(vocab, m, chosen, voice, strict, classes)
                if rule and before is not None:
                    mask &= _no_parallels(vocab, m, chosen, v, *before)
                allowed[empty] = mask[empty]
                # A particle that had to give up a constraint rarely survives the resampling.
                log_w[empty & mask.any(axis=1)] -= RELAX_PENALTY * level
            if not allowed.any(axis=1).all():
                raise BadMelody(f"a melody note ({m}) is too low to write three voices under it")
            scores = logp
            if prior is not None:
                if voice == "bass":
                    bass_before = history[:, i - 1, 0] % 12 if i else np.full(k, NONE)
                    table, weight = prior[0][i, bass_before], prior_weight
                else:
                    tenor = chosen[:, 1] % 12 if voice == "alto" else np.full(k, NONE)
                    table, weight = prior[1][i, chosen[:, 0] % 12, tenor], inner_weight
                scores = logp + weight * _prior_scores(vocab, table)
            token, mass = _masked_sample(scores, allowed, temperature, rng.random(k))
            log_w += mass
            chosen = np.concatenate([chosen, (PIANO_LOW + token - vocab.pitch_base)[:, None]], axis=1)
            logp = steps.feed(token, np.arange(k))
        for token in given[i][1]:  # the melody's attack, the closing bar (and <end> after the last note)
            log_w += logp[:, token] / temperature
            if token != vocab.end:
                logp = steps.feed(np.full(k, token), np.arange(k))
        history[:, i] = chosen
        # Resample the particles by their weights; the next feed continues from the chosen rows.
        rows = _resample(log_w, rng)
        history = history[rows]
    return history[0]


def _prior_scores(vocab: Vocabulary, table: np.ndarray) -> np.ndarray:
    """(k, V): each row's prior log-probability of a pitch class (`table`, (k, 12)) on the attack tokens
    of its pitches, zero elsewhere (a lower voice is masked to attacks anyway)."""
    out = np.zeros((len(table), len(vocab)))
    pitches = np.arange(vocab.pitch_low, vocab.pitch_high + 1)
    out[:, _attacks(vocab)] = table[:, pitches % 12]
    return out


def _given_tokens(vocab: Vocabulary, notes: Sequence[Event]) -> list[tuple[list[int], list[int]]]:
    """For each note, the given tokens before its lower voices (the shift to its frame, after a rest frame
    when the melody rests) and after them (its attack and closing bar; the last note's release and `<end>`)."""
    out = []
    prev: int | None = None  # time of the frame before, in grid steps
    for i, note in enumerate(notes):
        on = round(note.onset * GRID)
        before: list[int] = []
        if prev is not None:
            rest = round((notes[i - 1].onset + notes[i - 1].duration) * GRID)
            if rest < on:  # the melody rests: an empty frame releases the chord before
                vocab._shift(before, rest - prev)
                before.append(vocab.close)
                prev = rest
        vocab._shift(before, on - prev if prev is not None else on)
        prev = on
        after = [vocab.pitch_id(int(note.pitches[0])), vocab.phrase if i == len(notes) - 1 else vocab.close]
        if i == len(notes) - 1:
            vocab._shift(after, round((note.onset + note.duration) * GRID) - on)
            after.append(vocab.end)
        out.append((before, after))
    return out


def _no_parallels(
    vocab: Vocabulary, melody: int, chosen: np.ndarray, v: int, melody_before: int, before: np.ndarray
) -> np.ndarray:
    """(k, V): pitches for lower voice `v` (0 bass, 1 tenor, 2 alto) that make no consecutive fifth or
    octave with the melody or a voice already chosen, against the chord before (`before`, (k, 3))."""
    k = len(chosen)
    pitches = np.arange(vocab.pitch_low, vocab.pitch_high + 1)
    allowed = np.ones((k, len(vocab)), dtype=bool)
    for i in range(k):
        was = int(before[i, v])
        # (then, now, above): the other voice's pitch in the chord before and in this one, and whether it
        # sounds above this voice (the melody always does; bass and tenor lie below the tenor and alto).
        others = [(melody_before, melody, True)] + [
            (int(before[i, u]), int(chosen[i, u]), False) for u in range(v)
        ]
        bad = np.zeros(len(pitches), dtype=bool)
        for then, now, above in others:
            if then == now:
                continue  # that voice holds its pitch: any motion against it is oblique
            interval = (then - was) % 12 if above else (was - then) % 12
            if interval not in (0, 7):
                continue
            new = (now - pitches) % 12 if above else (pitches - now) % 12
            bad |= (new == interval) & (pitches != was)
        allowed[i, _attacks(vocab)] = ~bad
    return allowed


def _resample(log_w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: `k` row indices drawn in proportion to exp(log_w)."""
    w = np.exp(log_w - log_w.max())
    cdf = np.cumsum(w / w.sum())
    k = len(log_w)
    u = (rng.random() + np.arange(k)) / k
    return np.minimum(np.searchsorted(cdf, u), k - 1)


@dataclass
class Harmonization(Composition):
    """A harmonized melody: a composition whose soprano was given (kept in `melody`, as it was moved only
    as the key and the soprano's range required)."""

    key_source: str = (
        "melody"  # "melody", "asked", or "relative" (the asked key's relative, in the melody's mode)
    )
    melody: list[Event] = field(default_factory=list)
    folded: str = ""  # which notes were moved by an octave into the soprano's range, for the reply

    @property
    def onsets(self) -> int:
        return len(self.melody)

    @property
    def said(self) -> list[str]:
        """A meter assumed, not read from the melody's file, and the notes folded into the soprano's range."""
        return [s for s in (self.meter.assumption("melody", "harmonized"), self.folded) if s]


def chords_under(notes: Sequence[Event], lower: np.ndarray) -> list[Event]:
    """One event per melody note: its three lower voices and the melody note, with the note's own timing."""
    return [
        Event(n.onset, n.duration, tuple(sorted({*map(int, lower[i]), int(n.pitches[0])})), n.velocity)
        for i, n in enumerate(notes)
    ]


def plan_key(notes: Sequence[Event], asked: str | None) -> tuple[Key, str, int]:
    """The key to write in, where it came from, and the semitones (-6..+5) that move the melody there."""
    own = melody_key(notes)
    if asked is None:
        return own, "melody", 0
    target, source = Key.parse(asked), "asked"
    if target.mode != own.mode:  # a transposition keeps the mode: write in the relative key
        target = Key((target.tonic + (9 if own.mode == "minor" else 3)) % 12, own.mode)
        source = "relative"
    return target, source, (target.tonic - own.tonic + 6) % 12 - 6


def harmonize_melody(
    steps: Steps,
    vocab: Vocabulary,
    notes: Sequence[Event],
    key: Key,
    temperature: float,
    rng_seed: int,
    rules: bool = True,
    prior_weight: float = PRIOR_WEIGHT,
    inner_weight: float = INNER_WEIGHT,
    meter: Meter | None = None,
) -> tuple[list[Event], dict[str, float]]:
    """The four-voice chords for the melody `notes` in `key`, and the time it took.

    The melody is moved to C major or A minor for the network (and the harmony prior), and the chords back.
    The harmony prior places each note in the bars of `meter` (the melody's; by default 4/4 from 0).
    """
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    shift = key.to_reference()
    moved = transpose(notes, shift)
    before = moved[-2].pitches[0] if len(moved) > 1 else None
    cadence = cadence_for(moved[-1].pitches[0], before, REFERENCE[key.mode], key.mode == "minor")
    # The steps are small matrix products: BLAS threads would only wait on each other (and on a busy
    # machine, on everyone else), so one thread does them.
    prior = shipped() if prior_weight > 0 or inner_weight > 0 else None
    tables = prior.tables(moved, key.mode == "minor", meter or Meter()) if prior is not None else None
    with threadpool_limits(1, user_api="blas"):
        rng = np.random.default_rng(rng_seed)
        lower = harmonize_line(
            steps,
            vocab,
            moved,
            key.mode,
            cadence,
            temperature,
            rng,
            rules,
            tables,
            prior_weight,
            inner_weight,
        )
    return chords_under(notes, lower - shift), {"sample": time.perf_counter() - t0}


def harmonize(composer, options: Options, melody: Melody) -> Harmonization:
    """A four-part chorale on `melody` with the composer's model; the same options and RNG seed give the same."""
    from bot.model.composer import safe_name

    options = options.check().with_rng_seed().for_style("chorale")
    if not NumpySteps.supports(composer.model):
        raise ModelNotFound(
            f"the model {composer.model.name} cannot harmonize: its head is not a linear layer"
        )
    key, source, semitones = plan_key(melody.notes, options.key)
    # Folded after the key's move, from the file's own line, so the notes said to move are the ones that did.
    notes, _, moved = fold_line(transpose(melody.source or melody.notes, semitones))
    # The stream's time starts at the melody's 0, where its first bar (or pickup) starts.
    steps = NumpySteps(composer.model, meter=melody.meter)
    events, timings = harmonize_melody(
        steps, composer.vocab, notes, key, options.temperature, options.rng_seed, meter=melody.meter
    )
    return Harmonization(
        name=f"chorale-{safe_name(melody.name)}-{options.rng_seed}",
        events=events,
        melody=notes,
        tempo=float(options.tempo or melody.tempo),
        options=options,
        model=composer.model.name,
        key=key.name,
        key_source=source,
        timings=timings,
        seed_events=0,
        meter=melody.meter,
        folded=moved_text(notes, moved, melody.meter),
        # The melody's own level sets the piece's; it is not heard apart, so nothing is said about it.
        seed_style=seed_style(Piece(melody.name, list(melody.notes))),
    )
