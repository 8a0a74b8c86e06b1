"""How `RolloutSource.generate_turn` asks the engine: a fresh group of n samples is one request for n responses
(SGLang's parallel sampling), anything else one row per sample; every response lands in its own sample."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlpipe.data.sample import Sample, Status
from rlpipe.reward.hub import Scored
from rlpipe.rollout.engine import GenerateOutput, SamplingParams
from rlpipe.rollout.generate import RolloutSource


@dataclass
class RecordingEngine:
    """Answers row i's response k with the single token 100 * i + k, and records each call's rows and n."""

    calls: list[tuple[list[list[int]], int]] = field(default_factory=list)
    weight_version: int = 0

    def generate(self, prompts: list[list[int]], params: SamplingParams, on_output=None) -> list[list[GenerateOutput]]:
        self.calls.append((prompts, params.n))
        outputs = [
            [GenerateOutput([100 * i + k], "", [-0.5], "stop") for k in range(params.n)] for i in range(len(prompts))
        ]
        for i in reversed(range(len(prompts))):  # replies arrive in any order
            on_output(i, outputs[i])
        return outputs


def source(engine: RecordingEngine) -> RolloutSource:
    return RolloutSource(dataset=None, engine=engine, reward=None, decode=lambda ids, **_: " ".join(map(str, ids)))


def pending(prompt: list[int], n: int) -> list[Sample]:
    return [Sample(prompt="p", prompt_tokens=list(prompt), loss_mask=[], status=Status.PENDING) for _ in range(n)]


def test_fresh_groups_are_one_request_each_for_n_responses() -> None:
    engine = RecordingEngine()
    groups = [pending([1, 2], 3), pending([7], 3)]
    source(engine).continue_samples([s for g in groups for s in g], SamplingParams(max_new_tokens=4, n=3), 0)
    assert engine.calls == [([[1, 2], [7]], 3)]
    assert [[s.response_tokens for s in g] for g in groups] == [[[0], [1], [2]], [[100], [101], [102]]]
    assert all(s.status is Status.COMPLETED and s.response_text == str(s.response_tokens[0]) for g in groups for s in g)


def test_samples_that_differ_go_one_row_each() -> None:
    engine = RecordingEngine()
    group = pending([1, 2], 3)
    group[1].response_tokens, group[1].status = [5], Status.ABORTED  # resumed: its row holds its tokens so far
    source(engine).continue_samples(group, SamplingParams(max_new_tokens=4, n=3), 0)
    assert engine.calls == [([[1, 2], [1, 2, 5], [1, 2]], 1)]
    assert [s.response_tokens for s in group] == [[0], [5, 100], [200]]


def test_scored_repr_stays_short_however_many_samples() -> None:
    big = Scored(kept=[[Sample(prompt="p" * 1000) for _ in range(8)] for _ in range(1024)])
    assert repr(big) == "Scored(1024 groups kept, 0 failures, 0 dropped)"
