"""Prompt data at real size: a 17k-row file made ready in batches vs one tokenizer call per row, a 1M-row file streamed.

    python bench/data_scale.py                     17k and 1M rows, jsonl and parquet (the issue's sizes)
    python bench/data_scale.py --small 300 --large 3000 --eager-rows 1000 --batches 3 --workdir .    smoke size

The files are generated into --workdir (kept and reused there; a temporary folder without it): synthetic math-style
prompts of 20-100 words as chat messages (a system message on every 4th row), a label and a metadata dict; parquet
in row groups of --row-group rows. The tokenizer is a byte-level BPE (--vocab tokens) trained here with `tokenizers`
on the first min(--small, 20k) generated prompts and saved with a Qwen-style chat template, standing in for a hub
checkpoint's; every case loads it with `load_tokenizer`, as a run does. Each case runs in a fresh subprocess (one
case's memory never counts in another's peak RSS):

    ready     --small rows: `PromptDataset(...)` (read, template, batched tokenize, first permutation) against the old
              path (the same rows read, each templated and tokenized with its own tokenizer call, as PromptDataset
              did before), --rounds rounds taking turns in one process; medians, the ratio, and a check that both
              give the same tokens.
    stream    --large rows, `streaming=True`, shuffled: time to build (index the file), to the first batch of
              --batch prompts, throughput over --batches batches after it (the whole epoch with --full-pass);
              RSS before the dataset (Python, transformers, pyarrow, the tokenizer), after the first batch, at peak.
    eager RSS --eager-rows rows loaded eagerly vs streamed (--batches batches): peak RSS of each.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (  # Qwen's, without tools
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SYSTEM = "You are a careful math tutor. Think step by step and put the final answer in \\boxed{}."
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "po", "shi", "ven", "dor", "al", "ex", "qu", "ith", "ber", "zo")
WORDS = [a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in ("", "s", "ing", "ed")]  # 1024 words


def synthetic_rows(start: int, n: int) -> Iterator[dict[str, Any]]:
    """Rows start..start+n-1 of the synthetic prompt file (seeded by `start`)."""
    rng = random.Random(start)
    for i in range(start, start + n):
        a, b = rng.randrange(10_000), rng.randrange(10_000)
        words = " ".join(rng.choices(WORDS, k=rng.randint(20, 100)))
        question = f"Problem {i}. {words.capitalize()}. What is {a} + {b}?"
        prompt = [{"role": "user", "content": question}]
        if i % 4 == 0:
            prompt.insert(0, {"role": "system", "content": SYSTEM})
        yield {"prompt": prompt, "label": str(a + b), "metadata": {"id": i, "level": i % 5}}


def build_bpe_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, with Qwen's chat markers as special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=alphabet, show_progress=False
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )


# ------------------------------------------------------------------------------------------------ the files
def write_files(workdir: Path, n: int, row_group: int) -> tuple[Path, Path]:
    """rows-<n>.jsonl and rows-<n>-g<row_group>.parquet in `workdir`, written unless already there (renamed into
    place)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl, parquet = workdir / f"rows-{n}.jsonl", workdir / f"rows-{n}-g{row_group}.parquet"
    if jsonl.exists() and parquet.exists():
        return jsonl, parquet
    tmp_jsonl, tmp_parquet = jsonl.with_suffix(".jsonl.tmp"), parquet.with_suffix(".parquet.tmp")
    writer = None
    with tmp_jsonl.open("w", encoding="utf-8") as f:
        for start in range(0, n, row_group):
            rows = list(synthetic_rows(start, min(row_group, n - start)))
            f.writelines(json.dumps(row) + "\n" for row in rows)
            table = pa.Table.from_pylist(rows)
            writer = writer or pq.ParquetWriter(tmp_parquet, table.schema)
            writer.write_table(table, row_group_size=row_group)
    assert writer is not None
    writer.close()
    tmp_jsonl.rename(jsonl)
    tmp_parquet.rename(parquet)
    return jsonl, parquet


def save_tokenizer(workdir: Path, vocab: int, rows: int) -> Path:
    """The BPE trained on the first `rows` synthetic prompts, saved as an HF tokenizer folder."""
    folder = workdir / f"bpe-{vocab}-{rows}"
    if not (folder / "tokenizer.json").exists():
        texts = [m["content"] for row in synthetic_rows(0, rows) for m in row["prompt"]]
        build_bpe_tokenizer(texts, vocab).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------- the cases
def per_row_ready(path: Path, tok: PreTrainedTokenizerFast) -> list[tuple[int, ...]]:
    """The old path (the baseline): every row read, then templated and tokenized with a tokenizer call of its own."""
    from rlpipe.data.rows import read_rows

    rows = []
    for _, raw in read_rows(path):
        text = tok.apply_chat_template(raw["prompt"], add_generation_prompt=True, tokenize=False)
        tokens = tuple(tok.encode(text, add_special_tokens=False))
        rows.append((raw["prompt"], raw["label"], dict(raw.get("metadata") or {}), tokens))
    return [row[3] for row in rows]


def case_ready(path: Path, tok: PreTrainedTokenizerFast, rounds: int) -> dict[str, Any]:
    from rlpipe.data.dataset import PromptDataset

    runs: dict[str, list[tuple[float, float]]] = {"batched": [], "per-row": []}  # (wall, CPU) seconds
    for _ in range(rounds):
        ds = timed(runs["batched"], lambda: PromptDataset(path, tok, seed=0))
        old = timed(runs["per-row"], lambda: per_row_ready(path, tok))
    result = {"rows": len(ds), "tokens": sum(len(t) for t in old)}
    result["same_tokens"] = [tuple(s.prompt_tokens) for s in ds.rows_as_samples()] == old
    for name, pairs in runs.items():
        result[name] = statistics.median(wall for wall, _ in pairs)
        result[f"{name}_cpu"] = statistics.median(cpu for _, cpu in pairs)
    return result


def timed(runs: list[tuple[float, float]], fn: Callable[[], Any]) -> Any:
    """fn()'s result; its wall and CPU seconds (every thread's: the tokenizer's Rust ones too) go into `runs`."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return result


def case_stream(path: Path, tok: PreTrainedTokenizerFast, batch: int, batches: int, full: bool) -> dict[str, Any]:
    import psutil

    from rlpipe.data.dataset import PromptDataset

    t0 = time.perf_counter()
    ds = PromptDataset(path, tok, seed=0, streaming=True)
    t1 = time.perf_counter()
    ds.next_batch(batch)
    t2 = time.perf_counter()
    first_rss = psutil.Process().memory_info().rss
    served = batch
    while (ds.epoch == 0 and ds.offset < len(ds)) if full else served < batch * (batches + 1):
        served += len(ds.next_batch(min(batch, len(ds) - ds.offset) if full else batch))
    t3 = time.perf_counter()
    rate = (served - batch) / (t3 - t2) if served > batch else float("nan")
    return {"rows": len(ds), "index_s": t1 - t0, "first_batch_s": t2 - t1, "served": served, "rows_per_s": rate,
            "serving_s": t3 - t1, "first_rss": first_rss}  # fmt: skip


def case_eager(path: Path, tok: PreTrainedTokenizerFast) -> dict[str, Any]:
    from rlpipe.data.dataset import PromptDataset

    t0 = time.perf_counter()
    ds = PromptDataset(path, tok, seed=0)
    return {"rows": len(ds), "ready_s": time.perf_counter() - t0}


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    """The case named by --one, in this (fresh) process, with its RSS before the dataset and its peak RSS."""
    import psutil

    from rlpipe.data.tokenizer import load_tokenizer

    for module in ("rlpipe.data.dataset", "pyarrow.parquet"):  # before the RSS baseline: the runtime is not the data
        importlib.import_module(module)
    tok = load_tokenizer(args.tokenizer)
    before = psutil.Process().memory_info().rss
    kind, path = args.one.split(":", 1)
    if kind == "ready":
        result = case_ready(Path(path), tok, args.rounds)
    elif kind in ("stream", "pass"):
        result = case_stream(Path(path), tok, args.batch, args.batches, full=kind == "pass")
    else:
        result = case_eager(Path(path), tok)
    return {"case": kind, "file": Path(path).name, "rss_before": before, "peak_rss": peak_rss(), **result}


def peak_rss() -> int:
    """This process's peak resident set (bytes): VmHWM, which starts afresh at exec. getrusage's ru_maxrss does not:
    Linux carries it over from the parent through fork and exec, so a child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def spawn(args: argparse.Namespace, case: str, tokenizer: Path) -> dict[str, Any]:
    forwarded = ["--rounds", str(args.rounds), "--batch", str(args.batch), "--batches", str(args.batches)]
    forwarded += ["--tokenizer", str(tokenizer)]
    done = subprocess.run(
        [sys.executable, __file__, *forwarded, "--one", case], capture_output=True, text=True, cwd=ROOT
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def report(ready: list[dict], streamed: list[dict], eager: list[dict]) -> None:
    print("| made ready | rows | tokens | per-row (old) | batched (new) | new / old | CPU s old / new | same tokens "
          "| peak RSS |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in ready:
        print(f"| {r['file']} | {r['rows']} | {r['tokens']} | {r['per-row']:.2f} s | {r['batched']:.2f} s | "
              f"{r['batched'] / r['per-row']:.2f}x | {r['per-row_cpu']:.2f} / {r['batched_cpu']:.2f} | "
              f"{r['same_tokens']} | {mib(r['peak_rss'])} |")  # fmt: skip
    print("\n| streamed | rows | index | first batch | rows/s after it | served in | RSS: before the dataset / "
          "after the first batch / peak |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in streamed:
        rss = f"{mib(r['rss_before'])} / {mib(r['first_rss'])} / {mib(r['peak_rss'])}"
        print(f"| {r['file']} | {r['rows']} | {r['index_s']:.2f} s | {r['first_batch_s']:.2f} s | "
              f"{r['rows_per_s']:.0f} | {r['served']} rows in {r['serving_s']:.1f} s | {rss} |")  # fmt: skip
    print("\n| eager vs streamed | rows | eager peak RSS | streamed peak RSS | streamed / eager | eager ready |")
    print("|---|---:|---:|---:|---:|---:|")
    for e, s in zip(eager, streamed[-len(eager) :], strict=True):
        print(f"| {e['file']} | {e['rows']} | {mib(e['peak_rss'])} | {mib(s['peak_rss'])} | "
              f"{s['peak_rss'] / e['peak_rss']:.2f}x | {e['ready_s']:.2f} s |")  # fmt: skip
    if not all(r["same_tokens"] for r in ready):
        raise SystemExit("the batched path gave other tokens than the per-row path")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=17_000, help="rows of the file made ready eagerly")
    parser.add_argument("--large", type=int, default=1_000_000, help="rows of the file streamed")
    parser.add_argument("--eager-rows", type=int, default=100_000, help="rows loaded eagerly and streamed, for RSS")
    parser.add_argument("--row-group", type=int, default=65_536, help="parquet row group size (rows)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256, help="prompts per next_batch call")
    parser.add_argument("--batches", type=int, default=100, help="batches streamed after the first")
    parser.add_argument("--full-pass", action="store_true", help="stream the --large files' whole first epoch")
    parser.add_argument("--formats", nargs="+", choices=["jsonl", "parquet"], default=["jsonl", "parquet"])
    parser.add_argument("--workdir", default=None, help="keeps the files and tokenizer (default: a temporary one)")
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)  # subprocess: the tokenizer folder
    parser.add_argument("--one", help=argparse.SUPPRESS)  # subprocess: run this case
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_case(args)))
        return
    load = os.getloadavg()  # the machine is shared: say how busy it was
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()  # the subprocesses run from the repository
        workdir.mkdir(parents=True, exist_ok=True)
        tokenizer = save_tokenizer(workdir, args.vocab, min(args.small, 20_000))
        small, large, mid = (
            [path for path in write_files(workdir, n, args.row_group) if path.suffix[1:] in args.formats]
            for n in (args.small, args.large, args.eager_rows)
        )
        ready = [spawn(args, f"ready:{path}", tokenizer) for path in small]
        streamed = [spawn(args, f"{'pass' if args.full_pass else 'stream'}:{path}", tokenizer) for path in large]
        streamed += [spawn(args, f"stream:{path}", tokenizer) for path in mid]
        eager = [spawn(args, f"eager:{path}", tokenizer) for path in mid]
    print(f"BPE vocab {args.vocab}; parquet row groups of {args.row_group}; {args.batch} prompts a batch; "
          f"load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)")  # fmt: skip
    report(ready, streamed, eager)


if __name__ == "__main__":
    main()
