"""Dynamic sampling (DAPO) and partial rollout: fill a rollout with `batch_size` groups that pass a filter.

    wave      draw `over_sampling_batch_size` groups (default `batch_size`): first from the partial-rollout
              buffer by `rollout.buffer_filter_path` (default FIFO `pop_first`), the rest fresh prompts
    chunks    each wave is split into chunks of `batch_size` groups, generated one engine call at a time on
              a worker thread, so the groups of one chunk are scored and filtered while the next generates
    filter    `rollout.dynamic_sampling_filter_path(cfg, group) -> bool`; kept groups count toward the batch.
              A group whose reward call failed under `rollout.reward_failure: drop_group` is dropped before
              the filter sees it, and refilled the same way (counted as `groups_dropped/reward_failure`)
    refill    whenever kept + still-outstanding groups cannot reach `batch_size`, another wave starts; after
              `rollout.max_sampling_waves` waves a `DynamicSamplingError` names the filter (and the dropped
              reward failures) instead of looping
    stop      once `batch_size` groups are kept: queued chunks are cancelled and the chunk in flight aborted
              (engine.abort()); with `rollout.partial_rollout` those groups, with the tokens they have, and
              the surplus kept groups go to the buffer whole (GRPO needs complete groups), else are dropped

Departure from Miles: Miles sends one request per prompt and filters each group the moment it finishes; the
engine protocol here is batch-in, batch-out, so a chunk is the unit that arrives (a chunk of one prompt
would be Miles' behaviour at the cost of batching). Without a filter, over-sampling or buffer, a rollout is
exactly one chunk: one engine call, as before.
"""

from __future__ import annotations

from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING

from rlpipe.config.dotted import import_dotted
from rlpipe.config.schema import RunConfig
from rlpipe.data.sample import Sample

if TYPE_CHECKING:
    from rlpipe.rollout.generate import RolloutSource

DEFAULT_BUFFER_FILTER = "rlpipe.rollout.buffer.pop_first"
Chunk = list[list[Sample]]


class DynamicSamplingError(RuntimeError):
    """The filter kept too few groups within `rollout.max_sampling_waves` waves."""


def collect_groups(cfg: RunConfig, rollout_id: int, source: RolloutSource) -> list[list[Sample]]:
    """`batch_size` complete, scored groups that pass the filter; writes the wave metrics into source.metrics."""
    from rlpipe.rollout.generate import UNFINISHED, sampling_params

    ro = cfg.rollout
    need, n = ro.batch_size, ro.n_samples
    assert need is not None and n is not None  # resolved
    wave_size = ro.over_sampling_batch_size or need
    keep = import_dotted(ro.dynamic_sampling_filter_path) if ro.dynamic_sampling_filter_path else None
    pop = import_dotted(ro.buffer_filter_path or DEFAULT_BUFFER_FILTER)
    params = sampling_params(cfg)
    kept: list[list[Sample]] = []
    dropped: Counter[str] = Counter()
    running: deque[tuple[Future[None], Chunk]] = deque()
    waves = resumed = 0

    with ThreadPoolExecutor(1, thread_name_prefix="rlpipe-rollout") as pool:

        def launch_wave() -> None:
            nonlocal waves, resumed
            groups = pop(cfg, rollout_id, source.buffer, wave_size) if ro.partial_rollout else []
            resumed += len(groups)
            groups += source.new_groups(source.dataset.next_batch(max(0, wave_size - len(groups))), n, rollout_id)
            for start in range(0, len(groups), need):
                chunk = groups[start : start + need]
                running.append((pool.submit(source.continue_samples, _flat(chunk), params, rollout_id), chunk))
            waves += 1

        try:
            launch_wave()
            while len(kept) < need:
                future, chunk = running.popleft()
                future.result()
                for group in source.score_groups(chunk):  # less the groups whose reward failed (drop_group)
                    if keep is None or keep(cfg, group):
                        kept.append(group)
                    else:
                        dropped[keep.__name__] += 1
                outstanding = sum(len(c) for _, c in running)
                if len(kept) + outstanding < need:
                    if waves == ro.max_sampling_waves:
                        raise DynamicSamplingError(_too_few(cfg, rollout_id, len(kept), waves, source.metrics))
                    launch_wave()
        except BaseException:
            _stop(running, source)  # leave no engine call running behind an error
            raise
        leftover = _stop(running, source)

    surplus = kept[need:]
    kept = kept[:need]
    aborted = sum(any(s.status in UNFINISHED for s in g) for g in leftover)
    if ro.partial_rollout:
        source.buffer.extend(leftover + surplus)  # whole groups, tokens so far; resumed by a later rollout
    elif source.episodes is not None:
        source.episodes.end(_flat(leftover))  # their episodes are dropped unfinished: free the environments
    number_groups(kept, n)
    source.metrics |= {
        "sampling_waves": float(waves),
        "groups_kept": float(len(kept)),
        "groups_resumed": float(resumed),
        "groups_aborted": float(aborted),
        "groups_surplus": float(len(surplus)),
        "buffer_groups": float(len(source.buffer)),
        **{f"groups_dropped/{reason}": float(count) for reason, count in dropped.items()},
    }
    return kept


def number_groups(groups: list[list[Sample]], n: int) -> None:
    """Number `groups` in order (group_index) and their samples as consecutive runs of `n` (index): how the trainer
    and the group rewards read them."""
    for g, group in enumerate(groups):
        for k, sample in enumerate(group):
            sample.group_index, sample.index = g, g * n + k


def _too_few(cfg: RunConfig, rollout_id: int, kept: int, waves: int, metrics: dict[str, float]) -> str:
    """Why the waves ran out: the filter and/or the groups dropped for failed rewards, and what to change."""
    ro = cfg.rollout
    culprits = [f"the filter {ro.dynamic_sampling_filter_path}"] if ro.dynamic_sampling_filter_path else []
    if failed := int(metrics.get("groups_dropped/reward_failure", 0)):
        culprits.append(f"rollout.reward_failure=drop_group ({failed} groups dropped for failed reward calls)")
    return (
        f"dynamic sampling: {' and '.join(culprits) or 'the waves'} left {kept} of the {ro.batch_size} groups "
        f"rollout {rollout_id} needs after {waves} waves of {ro.over_sampling_batch_size or ro.batch_size} prompts "
        "(rollout.max_sampling_waves); loosen the filter, fix the reward, or raise rollout.max_sampling_waves or "
        "rollout.over_sampling_batch_size"
    )


def _stop(running: deque[tuple[Future[None], Chunk]], source: RolloutSource) -> list[list[Sample]]:
    """Cancel queued chunks, abort the one in flight, and return all their groups as they stand."""
    in_flight = [future for future, _ in running if not future.cancel()]
    for future in in_flight:
        # abort() stops the engine call in flight; repeated because a call that had not begun when the first
        # abort() landed clears it on entry (the HF engine does, so a later call is never stopped by an old one).
        while True:
            source.engine.abort()
            try:
                future.result(timeout=0.05)
                break
            except FutureTimeout:
                continue
    groups = [g for _, chunk in running for g in chunk]
    running.clear()
    return groups


def _flat(groups: Chunk) -> list[Sample]:
    return [s for g in groups for s in g]
