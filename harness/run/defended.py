"""A model wrapped in a defense, as an nn.Module, so that any attack can target "model + defense"; and the
defended prediction the runner scores: a majority vote over draws, decided as soon as it is certain."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from harness.api.interfaces import Defense
from harness.api.seeding import generator_for
from harness.run.checks import check_defense_logits
from harness.run.device import synchronize

# draw index → the generator of that draw (its numbers depend on the draw alone, not on the rows drawn for)
DrawGenerators = Callable[[int], torch.Generator]


@dataclass
class Predictions:
    pred: Tensor           # (N,) the majority class over the draws (ties: the lowest class index)
    vote_frac: Tensor      # (N,) share of the draws made that agree with it
    draws: Tensor          # (N,) draws made: a randomised defense stops drawing once its majority is certain
    first_votes: Tensor    # (N, C) votes of the first ⌈V/2⌉ draws, the ones every example gets
    probabilities: Tensor  # (N, C) softmax averaged over those first draws
    seconds: float

    def first_wrong(self, y: Tensor) -> Tensor:
        """(N,) share of the first ⌈V/2⌉ draws that miss ``y``: the same whether the vote stopped early or not."""
        return 1 - self.first_votes.gather(1, y[:, None]).squeeze(1) / self.first_votes.sum(dim=1)


class ScoringView(nn.Module):
    """The model as a defense sees it while it is scored.

    - Only the rows in ``rows`` are computed; the others get zero logits, so their input gradient is zero
      and a sign-gradient defense leaves them where they are. The defense itself still runs on the whole
      batch, so it draws exactly the random numbers it would draw for all rows: a prediction does not
      depend on which other rows were computed with it. A call on another number of rows (a defense that
      stacks copies) is computed whole.
    - A call without gradient (the final prediction) is computed in fp32 whatever the grid's precision, so
      that rounding cannot flip a verdict near the boundary; the defense's own gradient steps keep the
      grid's precision."""

    def __init__(self, model: nn.Module, rows: Tensor | None, n: int):
        super().__init__()
        self.model, self.rows, self.n = model, rows, n
        self.training = model.training

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return self._rows(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._rows(x.float()).float()

    def _rows(self, x: Tensor) -> Tensor:
        if self.rows is None or x.shape[0] != self.n:
            return self.model(x)
        computed = self.model(x[self.rows])
        return computed.new_zeros((self.n, *computed.shape[1:])).index_copy(0, self.rows, computed)


class DrawRunner:
    """One draw of a defense for some rows of a batch, in chunks of at most ``chunk`` rows.

    Every chunk runs the defense on the whole batch from the same generator state, so each row gets the
    same random numbers whatever the chunk size, and the generator ends where one whole-batch call leaves
    it. On ``torch.OutOfMemoryError`` the chunk is halved and the draw made again, with the same result;
    ``smallest_chunk`` records how far it had to go (the runner stores it with the unit)."""

    def __init__(self, chunk: int | None = None):
        self.chunk = chunk
        self.smallest_chunk: int | None = None

    def rows(self, model: nn.Module, call: Callable[[nn.Module, torch.Generator], Tensor], x: Tensor, rows: Tensor,
             generator: torch.Generator) -> Tensor:
        """``call(view, generator)[rows]``, where ``view`` is the model computing only a chunk of the rows."""
        state = generator.get_state()
        while True:
            chunk = min(self.chunk or len(x), len(rows)) or 1
            try:
                parts = []
                for i in range(0, len(rows), chunk):
                    part = rows[i:i + chunk]
                    generator.set_state(state)
                    parts.append(call(ScoringView(model, None if len(part) == len(x) else part, len(x)), generator)[part])
                return torch.cat(parts)
            except torch.OutOfMemoryError:
                if chunk <= 1:
                    raise
                self.chunk = self.smallest_chunk = chunk // 2
                if x.device.type == "cuda":
                    torch.cuda.empty_cache()

    def logits(self, model: nn.Module, defense: Defense, x: Tensor, rows: Tensor, generator: torch.Generator, *,
               name: str, num_classes: int | None) -> Tensor:
        """The defense's logits (fp32) for ``rows``, checked: finite, one column per class."""
        def call(view: nn.Module, g: torch.Generator) -> Tensor:
            with torch.no_grad():
                logits = defense.logits(view, x, generator=g)
            check_defense_logits(name, logits, len(x), num_classes if num_classes is not None else logits.shape[-1])
            return logits.float()

        return self.rows(model, call, x, rows, generator)

    def points(self, model: nn.Module, defense: Defense, x: Tensor, generator: torch.Generator) -> Tensor:
        """The points the defended prediction of every row is made from (N, P, …), without gradient."""
        def call(view: nn.Module, g: torch.Generator) -> Tensor:
            with torch.no_grad():
                return torch.stack(defense.prediction_points(view, x, generator=g), dim=1)

        return self.rows(model, call, x, torch.arange(len(x), device=x.device), generator).detach()


def predict_defended(model: nn.Module, defense: Defense, x: Tensor, votes: int, generators: DrawGenerators, *,
                     name: str = "", num_classes: int | None = None, runner: DrawRunner | None = None,
                     sequential: bool = True) -> Predictions:
    """The defended prediction; a randomised defense votes over up to ``votes`` draws (one otherwise).

    Taking the majority (rather than any single lucky draw, AutoAttack's PR #105 bug) is what makes a
    randomised defense's score honest. The vote is sequential and exact: the first ⌈V/2⌉ draws are made for
    every example, then one more draw at a time only for the examples no class holds a majority of (more
    than V/2 draws) yet. Draw d uses the same random numbers for an example whichever examples it is made
    for, so the prediction equals that of all V draws, example by example; ties over all V draws go to the
    lowest class index, on every device. ``sequential=False`` makes all V draws for every example (the same
    prediction, at the full price; kept to show that).
    """
    start = time.perf_counter()
    runner = runner or DrawRunner()
    draws = defense.draws(votes)
    majority, first = draws // 2 + 1, (draws + 1) // 2
    rows = torch.arange(x.shape[0], device=x.device)

    def draw(d: int) -> Tensor:
        return runner.logits(model, defense, x, rows, generators(d), name=name, num_classes=num_classes)

    logits = draw(0)
    counts = torch.zeros(logits.shape, dtype=torch.int64, device=x.device)
    summed = torch.zeros(logits.shape, dtype=torch.float32, device=x.device)
    made = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    first_votes, first_summed = counts, summed
    for d in range(draws):
        if d > 0:
            if d >= first and sequential:
                rows = (counts.amax(dim=1) < majority).nonzero().flatten()
                if not len(rows):
                    break
            logits = draw(d)
        counts[rows, logits.argmax(dim=1)] += 1
        summed[rows] += logits.softmax(dim=1)
        made[rows] += 1
        if d == first - 1:   # the first ⌈V/2⌉ draws: every example has them, however the vote goes on
            first_votes, first_summed = counts.clone(), summed.clone()
    pred = counts.argmax(dim=1)   # the first maximum: ties go to the lowest class index
    vote_frac = counts.gather(1, pred[:, None]).squeeze(1) / made
    synchronize(x.device)
    return Predictions(pred, vote_frac.float(), made, first_votes, first_summed / first_votes.sum(dim=1, keepdim=True),
                       time.perf_counter() - start)


def draws_from(generator: torch.Generator) -> DrawGenerators:
    """Per-draw generators for one prediction, seeded from one draw of ``generator`` (a stream of predictions)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return lambda d: generator_for(seed, "draw", d, device=generator.device)


class Defended(nn.Module):
    """forward(x) = the defense's prediction on x.

    gradient = "bpda": the defense runs without gradient and the backward pass is the identity, so the
    gradient is that of the model at the defended point (Athalye et al.'s BPDA, as Croce et al. use it). A
    defense that predicts from several points (the released Hedge sums the logits of its iterates) gives the
    sum of the model at each, so the surrogate's value is the prediction that is scored. A defense that adapts
    or ensembles the model rather than moving the input gives its own surrogate (``Defense.bpda_logits``).
    gradient = "full": differentiate through the defense itself (feasible for few Hedge steps).
    Randomness is drawn from ``generator``; each forward call is one fresh draw (EOT averages them).
    :meth:`predict` is the scored prediction: a majority over ``votes`` draws when the defense is
    random, as the runner scores it, so that an attack can check its success the same way.
    """

    def __init__(self, model: nn.Module, defense: Defense, generator: torch.Generator,
                 gradient: Literal["bpda", "full"] = "bpda", votes: int = 1, num_classes: int | None = None,
                 runner: DrawRunner | None = None):
        super().__init__()
        if votes < 1:
            raise ValueError(f"votes must be at least 1, got {votes}")
        self.model, self.defense, self.generator, self.gradient, self.votes = model, defense, generator, gradient, votes
        self.num_classes, self.runner = num_classes, runner or DrawRunner()

    def with_defense(self, defense: Defense, gradient: Literal["bpda", "full"]) -> Defended:
        """The same model and random stream behind another defense (e.g. a cheaper in-attack copy)."""
        return Defended(self.model, defense, self.generator, gradient=gradient, votes=self.votes,
                        num_classes=self.num_classes, runner=self.runner)

    def predict(self, x: Tensor, *, sequential: bool = True) -> Predictions:
        """The prediction the runner would score: the majority over ``votes`` draws if the defense is random."""
        return predict_defended(self.model, self.defense, x, self.votes, draws_from(self.generator),
                                num_classes=self.num_classes, runner=self.runner, sequential=sequential)

    def forward(self, x: Tensor) -> Tensor:
        if self.gradient == "full":
            return self._through_defense(x)
        surrogate = self.defense.bpda_logits(self.model, x, generator=self.generator)
        if surrogate is not None:
            return surrogate
        points = self.runner.points(self.model, self.defense, x.detach(), self.generator)
        if self.runner.chunk is None or not torch.is_grad_enabled():
            try:
                # the value at each defended point, identity backward (most defenses predict from one point)
                return sum(self.model(x + (points[:, p] - x).detach()) for p in range(points.shape[1]))
            except torch.OutOfMemoryError:   # one graph per point and row was too much: a chunk at a time
                self.runner.chunk = self.runner.smallest_chunk = max(len(x) // 2, 1)
                if x.device.type == "cuda":
                    torch.cuda.empty_cache()
        return _PointwiseBPDA.apply(x, points, self)

    def _through_defense(self, x: Tensor) -> Tensor:
        """The logits through the unrolled defense, differentiable in x. The whole batch at once (one graph) while
        it fits; once the runner has a chunk (set by hand, or halved on running out of memory), rows are taken a
        chunk at a time and recomputed in the backward pass, so that one chunk's graph is held at a time."""
        if self.runner.chunk is None or not torch.is_grad_enabled():
            state = self.generator.get_state()
            try:
                return self.defense.logits(self.model, x, generator=self.generator, differentiable=True)
            except torch.OutOfMemoryError:   # the draw is made again, in chunks, from where this one started
                self.generator.set_state(state)
                self.runner.chunk = self.runner.smallest_chunk = max(len(x) // 2, 1)
                if x.device.type == "cuda":
                    torch.cuda.empty_cache()
        return _ChunkedThroughDefense.apply(x, self)


class _ChunkedThroughDefense(torch.autograd.Function):
    """Defended.forward with gradient = "full", a chunk of rows at a time (activation checkpointing by rows).

    Each chunk runs the defense on the whole batch from the same generator state (``DrawRunner.rows``), so a row
    sees the same random numbers, and gets the same logits and input gradient, whatever the chunk size. The
    backward pass replays the draw from the state the forward pass started from, then puts the generator back
    where the forward pass left it, so the attack's later draws are untouched."""

    @staticmethod
    def forward(ctx, x: Tensor, defended: Defended) -> Tensor:  # type: ignore[override]
        generator = defended.generator
        ctx.defended, ctx.before = defended, generator.get_state()

        def logits(view: nn.Module, g: torch.Generator) -> Tensor:
            with torch.enable_grad():
                return defended.defense.logits(view, x.detach(), generator=g, differentiable=True).detach()

        out = defended.runner.rows(defended.model, logits, x, torch.arange(len(x), device=x.device), generator)
        ctx.after = generator.get_state()
        ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,), defended = ctx.saved_tensors, ctx.defended
        generator = defended.generator

        def input_gradient(view: nn.Module, g: torch.Generator) -> Tensor:
            with torch.enable_grad():
                leaf = x.detach().requires_grad_(True)
                logits = defended.defense.logits(view, leaf, generator=g, differentiable=True)
                (grad,) = torch.autograd.grad((logits * grad_out.to(logits.dtype)).sum(), leaf)
            return grad

        generator.set_state(ctx.before)
        grad = defended.runner.rows(defended.model, input_gradient, x, torch.arange(len(x), device=x.device), generator)
        generator.set_state(ctx.after)
        return grad, None


class _PointwiseBPDA(torch.autograd.Function):
    """BPDA's surrogate (the sum of the model at each defended point, identity backward) holding one graph at a time.

    The released Hedge predicts from its K − 1 iterates, so the plain surrogate keeps K − 1 graphs of the batch
    until the attack's backward pass. Here the forward pass computes the logits without a graph, and the backward
    pass takes the model's input gradient at each point, a chunk of rows at a time (``runner.chunk``): the same
    value and gradient, for one more forward pass per point."""

    @staticmethod
    def forward(ctx, x: Tensor, points: Tensor, defended: Defended) -> Tensor:  # type: ignore[override]
        ctx.defended = defended
        ctx.save_for_backward(points)
        chunk = defended.runner.chunk or len(x)
        with torch.no_grad():
            return torch.cat([sum(defended.model(points[i:i + chunk, p]) for p in range(points.shape[1]))
                              for i in range(0, len(x), chunk)])

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (points,), model = ctx.saved_tensors, ctx.defended.model
        chunk = ctx.defended.runner.chunk or len(points)
        parts = []
        for i in range(0, len(points), chunk):
            grad = torch.zeros_like(points[i:i + chunk, 0])
            for p in range(points.shape[1]):
                with torch.enable_grad():
                    leaf = points[i:i + chunk, p].detach().requires_grad_(True)
                    logits = model(leaf)
                    grad += torch.autograd.grad((logits * grad_out[i:i + chunk].to(logits.dtype)).sum(), leaf)[0]
            parts.append(grad)
        return torch.cat(parts), None, None
