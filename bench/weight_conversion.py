"""Weight conversion, engine-sync preparation and checkpoint conversion at a real shape, against memcpy / disk.

    python bench/weight_conversion.py                 # Qwen2.5-1.5B's shape (1.54 B parameters, bf16, tied)
    python bench/weight_conversion.py --hidden 96 --layers 2 --ffn 128 --vocab 512   # smoke size

An HF checkpoint with random bf16 weights is written straight from torch tensors, a few layers per
safetensors file, then every stage runs in a fresh subprocess (so no stage inherits another's memory), back to back:

    memcpy                  torch copy of the model's bytes (256 MiB buffers, warm): the in-memory baseline
    hf read+copy            each HF tensor mapped from its file and copied as it is into a resident tensor: the
                            floor under any conversion that starts from the files (no conversion at all)
    hf->megatron tp=1       the trainer's load: `hf_to_megatron(read_hf_state(...))` into resident parameters
    hf->megatron tp=2       the same for both ranks of TP=2 (the resharding the trainer's load does)
    megatron->hf tp=1       `megatron_to_hf` over live TP=1 parameters (the trainer's `hf_named_tensors`)
    megatron->hf tp=2       `shards_to_hf` merging both ranks' TP=2 shards
    engine sync payloads    the sync's HF tensors cut into buckets and serialized as the SGLang client posts them
                            (`protocol.buckets`, `serialize_named_tensors`, `update_tensor_body`, JSON)
    disk write              a plain write (and fsync) of the model's bytes to the work folder: the disk baseline
    hf->torch_dist          `python -m rlpipe.tools.convert hf-to-torch-dist` (in-process `main`)
    torch_dist->hf          `python -m rlpipe.tools.convert torch-dist-to-hf`

Each row reports GB/s over the model's bf16 bytes and the ratio to its baseline (memcpy for the in-memory stages,
the disk write for the checkpoint ones; goal >= 0.5), the baseline measured in the same subprocess right before the
stage (the machines here are shared: a baseline from another moment can be 2x off), and the subprocess's peak RSS
(VmHWM, reset after setup) above its RSS once its imports and inputs were in place, as a multiple of the model's
bytes. The stages that start from a live model (hf->megatron's parameters, megatron->hf, sync) count that model:
their peak includes it (goal for every row: <= 1.3x).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 256 * 2**20  # memcpy / disk-write buffer
DISK_STAGES = ("disk write", "hf->torch_dist", "torch_dist->hf")  # against the disk write; the rest: memcpy


def rss_bytes() -> int:
    """This process's resident set now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The most this process has held resident since the last `reset_peak_rss` (Linux's VmHWM)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def reset_peak_rss() -> None:
    """Start the peak over from the current resident set (Linux: /proc/self/clear_refs, "5")."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def hf_config_dict(args: argparse.Namespace) -> dict:
    """A Qwen2 config.json of the benchmark's shape (Qwen2.5-1.5B's by default)."""
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": args.hidden, "intermediate_size": args.ffn, "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads, "num_key_value_heads": args.kv_heads, "vocab_size": args.vocab,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_sliding_window": False,
    }  # fmt: skip


def write_checkpoint(args: argparse.Namespace, folder: Path) -> int:
    """Random bf16 weights of the shape as an HF folder, `--layers-per-file` layers per safetensors file (never
    the whole model in memory); returns the model's bytes."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(hf_config_dict(args)))
    h, d = args.hidden, args.hidden // args.heads
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * 0.02).to(torch.bfloat16)

    def layer(i: int) -> dict[str, torch.Tensor]:
        p = f"model.layers.{i}."
        kv = args.kv_heads * d
        return {
            p + "input_layernorm.weight": rand(h), p + "post_attention_layernorm.weight": rand(h),
            p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.q_proj.bias": rand(h),
            p + "self_attn.k_proj.weight": rand(kv, h), p + "self_attn.k_proj.bias": rand(kv),
            p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.v_proj.bias": rand(kv),
            p + "self_attn.o_proj.weight": rand(h, h), p + "mlp.gate_proj.weight": rand(args.ffn, h),
            p + "mlp.up_proj.weight": rand(args.ffn, h), p + "mlp.down_proj.weight": rand(h, args.ffn),
        }  # fmt: skip

    files = [{"model.embed_tokens.weight": rand(args.vocab, h), "model.norm.weight": rand(h)}]
    files += [range(start, min(start + args.layers_per_file, args.layers))
              for start in range(0, args.layers, args.layers_per_file)]  # fmt: skip
    total, weight_map = 0, {}
    for index, content in enumerate(files):
        tensors = content if isinstance(content, dict) else {k: v for i in content for k, v in layer(i).items()}
        name = f"model-{index + 1:05d}-of-{len(files):05d}.safetensors"
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update(dict.fromkeys(tensors, name))
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_json))
    return total


# ------------------------------------------------------------------------------------------------ stages
def _drain(pairs: Iterable) -> None:
    """Take each (name, tensor) and let it go, as a streaming consumer would."""
    for _ in pairs:
        pass


def _memcpy(model_bytes: int, _: Path, __: Path) -> Callable[[], None]:
    src = torch.ones(min(CHUNK, model_bytes), dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm: the destination's pages are mapped
    return lambda: [dst.copy_(src) for _ in range(-(-model_bytes // src.numel()))] and None


def _megatron_state(hf: Path, tp: int) -> tuple[object, list[dict]]:
    """The HF config and each TP rank's Megatron tensors, resident (a stage's live model)."""
    from transformers import AutoConfig

    from rlpipe.train.weights import hf_to_megatron, read_hf_state

    config = AutoConfig.from_pretrained(hf)
    return config, [dict(hf_to_megatron(read_hf_state(hf), config, r, tp)) for r in range(tp)]


def _hf_to_megatron(tp: int) -> Callable[[int, Path, Path], Callable[[], None]]:
    """The trainer's load at TP=`tp`: each rank's tensors converted from the HF folder and copied into that
    rank's resident parameters (the live model), as `MegatronTrainer.load_hf` does."""

    def prepare(_: int, hf: Path, __: Path) -> Callable[[], None]:
        from rlpipe.train.weights import hf_to_megatron, read_hf_state

        config, ranks = _megatron_state(hf, tp)
        params = [{name: torch.zeros_like(t) for name, t in rank.items()} for rank in ranks]
        del ranks

        def run() -> None:
            for r in range(tp):  # written in place, as `MegatronTrainer.load_hf` does with host parameters
                _drain(hf_to_megatron(read_hf_state(hf), config, r, tp, into=params[r]))

        return run

    return prepare


def _read_copy(_: int, hf: Path, __: Path) -> Callable[[], None]:
    """The floor under a conversion from files: each HF tensor read (mapped from its file) and copied, as it is,
    into a resident tensor of its shape."""
    from rlpipe.train.weights import read_hf_state

    state = read_hf_state(hf)
    params = {name: torch.zeros_like(state[name]) for name in state}
    return lambda: [params[name].copy_(state[name]) for name in state] and None


def _megatron_to_hf_tp1(_: int, hf: Path, __: Path) -> Callable[[], None]:
    from rlpipe.train.weights import megatron_to_hf

    config, (state,) = _megatron_state(hf, 1)
    return lambda: _drain(megatron_to_hf(state.items(), config))


def _megatron_to_hf_tp2(_: int, hf: Path, __: Path) -> Callable[[], None]:
    from rlpipe.train.weights import shards_to_hf

    config, ranks = _megatron_state(hf, 2)
    return lambda: [_drain(shards_to_hf(name, [r[name] for r in ranks], config)) for name in ranks[0]] and None


def _sync_payloads(_: int, hf: Path, __: Path) -> Callable[[], None]:
    from rlpipe.rollout.sglang import protocol
    from rlpipe.train.weights import megatron_to_hf

    config, (state,) = _megatron_state(hf, 1)

    def run() -> None:
        named = list(megatron_to_hf(state.items(), config))  # what `hf_named_tensors` hands the engine
        for bucket in protocol.buckets(named, 512 * 2**20):  # the SGLang client's default bucket_bytes
            json.dumps(protocol.update_tensor_body(protocol.serialize_named_tensors(bucket), 1, 1))

    return run


def _disk_write(model_bytes: int, _: Path, work: Path) -> Callable[[], None]:
    buffer = torch.ones(min(CHUNK, model_bytes), dtype=torch.uint8).numpy()

    def run() -> None:
        path = work / "plain.bin"
        with open(path, "wb") as f:  # a new file, as the conversions write
            left = model_bytes
            while left > 0:
                f.write(buffer[: min(left, buffer.size)])
                left -= buffer.size
            f.flush()
            os.fsync(f.fileno())
        path.unlink()

    return run


def _to_torch_dist(_: int, hf: Path, work: Path) -> Callable[[], None]:
    import rlpipe.train.trainer  # noqa: F401  megatron, transformers: imported before the baseline RSS
    from rlpipe.tools.convert import main as convert

    return lambda: convert(["hf-to-torch-dist", "--hf", str(hf), "--out", str(work / "dist"), "--overwrite"])


def _to_hf(_: int, hf: Path, work: Path) -> Callable[[], None]:
    import rlpipe.train.trainer  # noqa: F401
    from rlpipe.tools.convert import main as convert

    out = ["--out", str(work / "back"), "--overwrite"]
    return lambda: convert(["torch-dist-to-hf", "--ckpt", str(work / "dist"), "--hf-config", str(hf), *out])


STAGES: dict[str, tuple[Callable[[int, Path, Path], Callable[[], None]], bool]] = {
    # name: (prepare -> run, whether the prepared input is the model itself and counts towards the peak)
    "memcpy": (_memcpy, False),
    "hf read+copy": (_read_copy, True),
    "hf->megatron tp=1": (_hf_to_megatron(1), True),
    "hf->megatron tp=2": (_hf_to_megatron(2), True),
    "megatron->hf tp=1": (_megatron_to_hf_tp1, True),
    "megatron->hf tp=2": (_megatron_to_hf_tp2, True),
    "engine sync payloads": (_sync_payloads, True),
    "disk write": (_disk_write, False),
    "hf->torch_dist": (_to_torch_dist, False),
    "torch_dist->hf": (_to_hf, False),
}


def measure(stage: str, model_bytes: int, hf: Path, work: Path) -> dict[str, float]:
    """One stage in this process: its seconds, its baseline's seconds measured right before it in the same process
    (memcpy, or the disk write for the checkpoint stages: the box is shared, so a baseline from another moment could
    be 2x off), and its peak RSS above the RSS before its counted input existed."""
    torch.set_num_threads(os.cpu_count() or 1)
    prepare, input_is_model = STAGES[stage]
    import transformers  # noqa: F401  the stages' common imports are not the model

    import rlpipe.rollout.sglang.protocol
    import rlpipe.train.weights  # noqa: F401

    base = rss_bytes()
    run = prepare(model_bytes, hf, work)
    if not input_is_model:
        base = rss_bytes()
    baseline = STAGES["disk write" if stage in DISK_STAGES else "memcpy"][0](model_bytes, hf, work)
    start = time.perf_counter()
    baseline()
    baseline_seconds = time.perf_counter() - start
    del baseline
    reset_peak_rss()  # setup's own transients (and the baseline's buffers) are not the stage's
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "baseline_seconds": baseline_seconds, "peak_over_base": peak_rss_bytes() - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--ffn", type=int, default=8960)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--layers-per-file", type=int, default=4)
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--workdir", default=None, help="where the checkpoints go (default: a temporary folder)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # subprocess: STAGE MODEL_BYTES HF WORK
    args = parser.parse_args()
    if args.one is not None:
        stage, model_bytes, hf, work = json.loads(args.one)
        print(json.dumps(measure(stage, model_bytes, Path(hf), Path(work))))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        work = Path(workdir).resolve()
        model_bytes = write_checkpoint(args, work / "hf")
        rows = {}
        for stage in args.stages:
            one = json.dumps([stage, model_bytes, str(work / "hf"), str(work)])
            done = subprocess.run([sys.executable, __file__, "--one", one], capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                sys.exit(f"stage {stage} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
            rows[stage] = json.loads(done.stdout.strip().splitlines()[-1])
    shape = (f"hidden {args.hidden}, {args.layers} layers, {args.heads} heads / {args.kv_heads} kv, "
             f"ffn {args.ffn}, vocab {args.vocab}, tied")  # fmt: skip
    print(f"model: {model_bytes / 2**30:.2f} GiB of bf16 weights ({shape}); {os.cpu_count()} CPU cores")
    print("| stage | seconds | GB/s | baseline GB/s | vs baseline | peak RSS / model |")
    print("|---|---:|---:|---:|---:|---:|")
    for stage, row in rows.items():
        rate, base_rate = (model_bytes / row[key] / 1e9 for key in ("seconds", "baseline_seconds"))
        kind = "disk" if stage in DISK_STAGES else "memcpy"
        print(f"| {stage} | {row['seconds']:.2f} | {rate:.2f} | {base_rate:.2f} ({kind}) | {rate / base_rate:.2f}x | "
              f"{row['peak_over_base'] / model_bytes:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
