"""Ground truth for the Miles/slime launch-script corpus: the argv real bash hands `train.py`.

The corpus (tests/config/fixtures/miles_corpus/, see SOURCES.md there) holds the public launch scripts of
THUDM/slime and radixark/miles with the `scripts/models/*.sh` files they source, laid out as in their repositories
so `source "${SCRIPT_DIR}/models/x.sh"` resolves, plus `.argv` files: the command lines Miles' typed Python launchers
print. `bash_argv` runs one script with real bash and returns what its final `train.py` / `train_async.py` command
receives; an importer that reads bash itself can be checked against it.

Bash executes the script for real, so it runs in a sandbox-ish setting:

- PATH holds only two temp folders: stubs for every external command launch scripts call (`python3`, `ray`,
  `pkill`, `sleep`, `nvidia-smi`, `rm`, `ssh`, `curl`, ...) and links to harmless text tools (`grep`, `awk`,
  `sed`, `wc`, `seq`, `dirname`, ...). A command in neither is "not found" (exit 127) and is reported.
- Stubs print nothing and exit 0, except: `python`/`python3`/`ray`/`torchrun` record their argv NUL-separated into
  the file named by $RLPIPE_ARGV_FILE when a word is a TRAIN_SCRIPTS name (the last such command wins);
  `python3 .../model_args_utils.py NAME` prints Miles' model args from miles-head/model_args.tsv; `python3 -c` of
  pure arithmetic runs, a Ray GPU count or local-IP probe prints a plausible answer; `nvidia-smi`, `hostname`,
  `ip`, `nproc` print a plausible 8-GPU node; `mkdir`/`touch`/`mktemp` act only inside the temp folder; `date`
  prints a fixed time; `sed -i` does nothing; `nohup`/`timeout`/`setsid` run their command (through the stubs);
  `tee` only copies stdin; `pip list` names megatron-core.
- BASH_ENV turns the `kill` builtin into a no-op, makes a failing `cd` stay put (launch scripts `cd /root/miles`),
  seeds $RANDOM, and makes `source` of a missing `.../models/X.sh` (an absolute `/root/slime/...` path, a script
  moved to another folder) read X.sh from the script's repository folder in the corpus; each such stand-in is
  reported (`BashRun.stubbed`). The environment is only `env` plus DEFAULT_ENV placeholders (HOME, TMPDIR and the
  working folder are the temp folder); positional arguments come from DEFAULT_ARGS; a variable that `set -u`
  reports unbound is set empty and the script re-run.
- Not sandboxed: bash's own redirections (`> file`); the corpus writes only to paths built from placeholders
  that point into the temp folder. Reads (`awk ... /root/mpi_rack_hostfile`) see this machine.

Run `python tests/config/miles_corpus_tool.py` for a per-script summary. `launcher_argv` (needs a Miles checkout,
typer and ray) regenerates the `.argv` files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent / "fixtures" / "miles_corpus"
TRAIN_SCRIPTS = frozenset({"train.py", "train_async.py", "train_multi_lora_async.py"})
ARGV_ENV = "RLPIPE_ARGV_FILE"
TIMEOUT_S = 20
MAX_RERUNS = 16  # re-runs after `set -u` names an unbound variable

# Real tools on PATH: they read and print, never write files or start programs outside PATH.
SAFE_TOOLS = (
    "awk", "base64", "basename", "bash", "cat", "cut", "dirname", "echo", "env", "envsubst", "expr", "false",
    "getconf", "grep", "head", "id", "ls", "md5sum", "numfmt", "od", "paste", "printf", "readlink", "realpath",
    "seq", "sh", "sha256sum", "shuf", "sort", "stat", "tac", "tail", "test", "tr", "true", "uname", "uniq",
    "wc", "whoami", "xargs", "yes",
)  # fmt: skip
# External commands of the corpus (and their kin) that must not run: print nothing, exit 0.
QUIET_STUBS = (
    "amd-smi", "apt", "apt-get", "chmod", "chown", "conda", "cp", "curl", "dd", "docker", "free", "fuser", "git",
    "hf", "huggingface-cli", "install", "kill", "killall", "ln", "lsof", "mount", "mv", "nc", "netstat",
    "npu-smi", "pgrep", "pip3", "pkill", "ps", "redis-cli", "redis-server", "rm", "rmdir", "rocm-smi",
    "rsync", "sbatch", "scontrol", "scp", "sglang", "sleep", "squeue", "srun", "ss", "ssh", "sudo", "systemctl",
    "tar", "tensorboard", "truncate", "umount", "uv", "wandb", "wget",
)  # fmt: skip
# Placeholders for what scripts demand from their caller (`if [ -z "${BASE_FOLDER}" ]; then exit 1`), and output
# folders the corpus builds paths from (pointed into the sandbox: {tmp}).
DEFAULT_ENV = {
    "BASE_FOLDER": "/root",
    "BASE_DIR": "/root/shared",
    "MASTER_ADDR": "127.0.0.1",
    "OUTPUT_DIR": "{tmp}/output",
    "MILES_LOG_DIR": "{tmp}/logs",
}
RECORDERS = ("python", "python3", "python3.10", "python3.11", "python3.12", "ray", "torchrun")

# Positional arguments some scripts require (`${1:?Usage ...}`), by path relative to CORPUS_DIR.
DEFAULT_ARGS: dict[str, tuple[str, ...]] = {
    "miles/scripts/run-nemotron-3-super-120b-a12b.sh": ("head", "127.0.0.1"),
    "miles/examples/infra_features/p2p_weight_transfer/run-glm5-disagg-profile.sh": ("GLM-5", "p2p", "0", "127.0.0.1"),
    "miles-head/examples/infra_features/p2p_weight_transfer/run-glm5-disagg-profile.sh": (
        "GLM-5", "p2p", "0", "127.0.0.1",
    ),
}  # fmt: skip
DEFAULT_ARGS_BY_NAME = {
    re.compile(r"run-.*-\d+node-profile\.sh"): ("p2p", "0", "127.0.0.1"),
    re.compile(r"run-.*-disaggregated-multi-node\.sh"): ("p2p", "0", "127.0.0.1"),
}

_SHEBANG = "#!/bin/bash\n"
_RECORDER = r"""
for a in "$@"; do
  case "${a##*/}" in
    train.py|train_async.py|train_multi_lora_async.py)
      if [ -n "${RLPIPE_ARGV_FILE:-}" ]; then printf '%s\0' "${0##*/}" "$@" > "$RLPIPE_ARGV_FILE"; fi
      exit 0;;
    model_args_utils.py)
      name="${*: -1}"
      while IFS=$'\t' read -r key value; do
        if [ "$key" = "$name" ]; then printf '%s\n' "$value"; exit 0; fi
      done < "${RLPIPE_MODEL_ARGS_TABLE:-/dev/null}"
      printf 'rlpipe stub: no model args for %s\n' "$name" >&2; exit 1;;
  esac
done
if [ "${1:-}" = "-c" ]; then
  case "${2:-}" in
    *cluster_resources*) echo "${RLPIPE_STUB_CLUSTER_GPUS:-1024}";;
    *getsockname*) echo 10.0.0.1;;
    *) if [[ "${2:-}" =~ ^print\(int\([0-9.\ *+/()-]+\)\)$ ]]; then exec "$RLPIPE_REAL_PYTHON" -I -S -c "$2"; fi;;
  esac
fi
exit 0
"""
_IN_SANDBOX = r"""
keep=()
for a in "$@"; do
  case "$a" in
    -*) keep+=("$a");;
    *) case "$(realpath -m -- "$a")/" in "$RLPIPE_SANDBOX"/*) keep+=("$a");; esac;;
  esac
done
for a in "${keep[@]}"; do case "$a" in -*) ;; *) exec "$REAL" "${keep[@]}";; esac; done
exit 0
"""
_NVIDIA_SMI = r"""
n="${RLPIPE_STUB_GPUS:-8}"
case " $* " in
  *" topo "*)
    printf '\tGPU0\tGPU1\n'; for ((i = 0; i < n; i++)); do printf 'GPU%d\tX\tNV18\n' "$i"; done;;
  *" -L "*)
    for ((i = 0; i < n; i++)); do printf 'GPU %d: NVIDIA H100 80GB HBM3 (UUID: GPU-%08d)\n' "$i" "$i"; done;;
  *--query-gpu*)
    for ((i = 0; i < n; i++)); do printf '%d, NVIDIA H100 80GB HBM3, 81559 MiB\n' "$i"; done;;
  *) printf 'NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4\n'
     for ((i = 0; i < n; i++)); do printf '|   %d  NVIDIA H100 80GB HBM3   On |\n' "$i"; done;;
esac
"""
_SPECIAL = {
    "nvidia-smi": _NVIDIA_SMI,
    "hostname": 'case "${1:-}" in -I|-i|--ip-address*|--all-ip*) echo 10.0.0.1;; *) echo rlpipe-node0;; esac\n',
    "ip": (
        'case " $* " in *" addr"*|*" a "*) echo "2: eth0    inet 10.0.0.1/24 brd 10.0.0.255 scope global eth0";; esac\n'
    ),
    "nproc": "echo 64\n",
    "pip": 'if [ "${1:-}" = list ]; then echo "megatron-core 0.16.0 /root/Megatron-LM"; fi\n',
    "date": 'exec "$REAL" -u -d "2026-01-01 00:00:00" "$@"\n',
    "tee": 'exec "$REAL_CAT"\n',
    "sed": 'for a in "$@"; do case "$a" in -i*|--in-place*) exit 0;; esac; done; exec "$REAL" "$@"\n',  # no edits
    "mktemp": (
        'd=; t=; for a in "$@"; do case "$a" in -d|--directory) d=1;; -*) ;; *) t="${a##*/}";; esac; done\n'
        'f="$RLPIPE_SANDBOX/tmp/${t:-tmp.XXXXXX}"; f="${f//X/$((RANDOM % 10))}"\n'
        'if [ -n "$d" ]; then "$REAL_MKDIR" -p "$f"; else : > "$f"; fi; printf "%s\\n" "$f"\n'
    ),
    "nohup": 'exec "$@"\n',
    "setsid": 'while [[ "${1:-}" == -* ]]; do shift; done; exec "$@"\n',
    "stdbuf": 'while [[ "${1:-}" == -* ]]; do shift; done; exec "$@"\n',
    "numactl": 'while [[ "${1:-}" == -* ]]; do shift; done; exec "$@"\n',
    "timeout": (
        'while [[ "${1:-}" == -* ]]; do case "$1" in -s|-k|--signal|--kill-after) shift;; esac; shift; done\n'
        'shift; exec "$@"\n'
    ),
}
_BASH_ENV = r"""
kill() { :; }
cd() {
  builtin cd "$@" 2>/dev/null || printf 'rlpipe stub: cd %s failed, staying in %s\n' "$*" "$PWD" >&2
  return 0
}
RANDOM=42
source() {
  if [ ! -f "${1:-}" ] && [ -n "${RLPIPE_MODELS_DIR:-}" ] && [ -f "$RLPIPE_MODELS_DIR/${1##*/}" ]; then
    case "$1" in */models/*.sh)
      printf 'rlpipe stub: source %s: not found, read %s\n' "$1" "$RLPIPE_MODELS_DIR/${1##*/}" >&2
      set -- "$RLPIPE_MODELS_DIR/${1##*/}" "${@:2}";;
    esac
  fi
  builtin source "$@"
}
"""


def _which(name: str) -> str | None:
    return shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@dataclass
class Sandbox:
    """A temp folder: bin/ (stubs), safe/ (links to SAFE_TOOLS), work/ (the cwd), tmp/ (HOME, TMPDIR)."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def argv_file(self) -> Path:
        return self.root / "train.argv"

    def build(self) -> None:
        for sub in ("bin", "safe", "work", "tmp"):
            (self.root / sub).mkdir()
        for name in SAFE_TOOLS:
            if real := _which(name):
                (self.root / "safe" / name).symlink_to(real)
        for name in QUIET_STUBS:
            _write(self.bin / name, _SHEBANG + "exit 0\n")
        for name in RECORDERS:
            _write(self.bin / name, _SHEBANG + _RECORDER)
        for name, body in _SPECIAL.items():
            _write(self.bin / name, _SHEBANG + f"REAL={shlex.quote(_which(name) or '/bin/false')}\n" + body)
        for name in ("mkdir", "touch"):
            _write(self.bin / name, _SHEBANG + f"REAL={shlex.quote(_which(name) or '/bin/false')}\n" + _IN_SANDBOX)
        (self.root / "bash_env").write_text(_BASH_ENV)

    def env(self, extra: Mapping[str, str]) -> dict[str, str]:
        tmp = str(self.root / "tmp")
        base = {
            "PATH": f"{self.bin}:{self.root / 'safe'}",
            "HOME": tmp,
            "TMPDIR": tmp,
            "USER": "root",
            "LANG": "C.UTF-8",
            "BASH_ENV": str(self.root / "bash_env"),
            "RLPIPE_SANDBOX": str(self.root),
            "RLPIPE_REAL_PYTHON": sys.executable,
            "RLPIPE_MODEL_ARGS_TABLE": str(CORPUS_DIR / "miles-head" / "model_args.tsv"),
            "REAL_CAT": _which("cat") or "/bin/cat",
            "REAL_MKDIR": _which("mkdir") or "/bin/mkdir",
            ARGV_ENV: str(self.argv_file),
            **{name: value.format(tmp=tmp) for name, value in DEFAULT_ENV.items()},
        }
        return {**base, **extra}


@contextmanager
def sandbox() -> Iterator[Sandbox]:
    with tempfile.TemporaryDirectory(prefix="miles-corpus-") as tmp:
        box = Sandbox(Path(tmp).resolve())
        box.build()
        yield box


@dataclass
class BashRun:
    """One script under bash: `argv` is what its final train command received (None: no train command ran)."""

    script: Path
    argv: list[str] | None
    returncode: int | None  # None: timed out
    stderr: str
    not_found: list[str] = field(default_factory=list)  # commands bash could not find (not stubbed, not safe)
    unbound: list[str] = field(default_factory=list)  # variables `set -u` named, set empty for a re-run
    stubbed: list[str] = field(default_factory=list)  # where the sandbox stood in: a rerouted source, a failed cd


def _train_words(recorded: list[str]) -> list[str] | None:
    """From a recorded command line, the train script's word and the words after it."""
    for i, word in enumerate(recorded):
        if Path(word).name in TRAIN_SCRIPTS:
            return recorded[i:]
    return None


def _default_args(script: Path) -> tuple[str, ...]:
    try:
        rel = script.resolve().relative_to(CORPUS_DIR).as_posix()
    except ValueError:
        rel = ""
    if rel in DEFAULT_ARGS:
        return DEFAULT_ARGS[rel]
    return next((args for pattern, args in DEFAULT_ARGS_BY_NAME.items() if pattern.fullmatch(script.name)), ())


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int | None, str]:
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, text=True, errors="replace",
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session this call started, nothing else
        _, err = proc.communicate()
        return None, err


def models_dir(script: Path) -> Path | None:
    """The `scripts/models` folder of a corpus script's repository snapshot (None outside the corpus): where a
    user's checkout holds the model files a script sources from a path of its authors' machines."""
    try:
        return CORPUS_DIR / script.resolve().relative_to(CORPUS_DIR).parts[0] / "scripts" / "models"
    except ValueError:
        return None


def model_args_output(command: str) -> str | None:
    """What `python3 .../model_args_utils.py NAME` (the command text, as a script spells it) prints: the stub's
    answer from miles-head/model_args.tsv; None for another command or an unknown model."""
    if "model_args_utils.py" not in command:
        return None
    name = re.findall(r"[\w.+-]+", command.split("model_args_utils.py", 1)[1])[0]
    table = (CORPUS_DIR / "miles-head" / "model_args.tsv").read_text().splitlines()
    return next((line.split("\t", 1)[1] for line in table if line.split("\t", 1)[0] == name), None)


def run_script(script: Path, env: Mapping[str, str] | None = None, args: tuple[str, ...] | None = None) -> BashRun:
    """Run `script` under real bash in a fresh sandbox (see the module docstring); never raises for the script."""
    script = script.resolve()
    args = _default_args(script) if args is None else args
    extra = dict(env or {})
    if (models := models_dir(script)) is not None:  # a models file the script's `source` misses is read from there
        extra.setdefault("RLPIPE_MODELS_DIR", str(models))
    unbound: list[str] = []
    with sandbox() as box:
        for _ in range(MAX_RERUNS + 1):
            box.argv_file.unlink(missing_ok=True)
            code, err = _run(["bash", str(script), *args], box.env(extra), box.work, TIMEOUT_S)
            names = [n for n in re.findall(r": ([A-Za-z_]\w*): unbound variable", err) if n not in extra]
            recorded = box.argv_file.read_bytes().split(b"\0")[:-1] if box.argv_file.exists() else None
            if recorded is not None or not names:
                break
            unbound += names
            extra.update(dict.fromkeys(names, ""))
        tmp = str(box.root / "tmp")
    words = [w.decode(errors="surrogateescape").replace(tmp, "{tmp}") for w in recorded or []]
    argv = _train_words(words) if recorded is not None else None
    missing = sorted(set(re.findall(r"([\w.+-]+): command not found", err)))
    stubbed = list(dict.fromkeys(re.findall(r"^rlpipe stub: (.*)$", err, re.M)))
    return BashRun(script, argv, code, err, missing, unbound, stubbed)


def bash_argv(script: Path, env: dict[str, str], args: tuple[str, ...] | None = None) -> list[str]:
    """What the final `train.py` / `train_async.py` command of `script` receives under real bash: the script's
    word (as the command spelled it, e.g. `train.py` or `/root/miles/train.py`) first, then every flag and value.
    The sandbox's temp folder (HOME, TMPDIR, DEFAULT_ENV's {tmp}) is written `{tmp}` in the words.

    env: extra environment (placeholders for what the script expects from its caller). args: positional
    arguments (default: DEFAULT_ARGS for the corpus scripts that require some). Raises RuntimeError when no train
    command ran, with the end of bash's stderr."""
    run = run_script(script, env, args)
    if run.argv is None:
        status = "timed out" if run.returncode is None else f"exit {run.returncode}"
        raise RuntimeError(f"{script}: no train.py command ran ({status}):\n{run.stderr[-2000:]}")
    return run.argv


def argv_file_words(path: Path) -> list[str]:
    """The train words of a `.argv` file (one shell-quoted command line; `#` lines are comments)."""
    line = " ".join(ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#"))
    words = _train_words(shlex.split(line))
    if words is None:
        raise ValueError(f"{path}: no train.py word")
    return words


def corpus() -> list[Path]:
    """The corpus entries: every launch script (`*.sh` outside `scripts/models/`) and every `.argv` file."""
    out = []
    for path in sorted(CORPUS_DIR.rglob("*")):
        if path.suffix == ".argv" or (path.suffix == ".sh" and "scripts/models/" not in path.as_posix()):
            out.append(path)
    return out


# ------------------------------------------------------------------ Miles' typed Python launchers (.argv files)
_LAUNCHER_RUNNER = r"""
import builtins, importlib.util, io, json, os, shutil, sys, types
checkout, launcher = sys.argv[1], sys.argv[2]
KWARGS = json.loads(sys.argv[3])  # LAUNCHER_KWARGS
sys.path[:0] = [os.path.dirname(launcher), checkout]  # as `python launcher` would, plus the checkout
box = os.environ["RLPIPE_SANDBOX"] + "/"
def outside(*paths):
    return any(isinstance(p, (str, os.PathLike)) and not os.path.realpath(p).startswith(box) for p in paths)
real_open = io.open
def guarded_open(file, mode="r", *a, **k):  # a write outside the sandbox goes to /dev/null
    if any(c in mode for c in "wax+") and outside(file):
        return real_open(os.devnull, mode.replace("x", "w").replace("+", ""), *a, **k)
    return real_open(file, mode, *a, **k)
builtins.open = io.open = guarded_open
def guard(mod, name, n_paths):
    real = getattr(mod, name)
    setattr(mod, name, lambda *a, **k: None if outside(*a[:n_paths]) else real(*a, **k))
for mod, name, n in ((os, "makedirs", 1), (os, "mkdir", 1), (os, "remove", 1), (os, "unlink", 1),
                     (os, "rmdir", 1), (os, "rename", 2), (os, "replace", 2), (shutil, "rmtree", 1)):
    guard(mod, name, n)
class Absent(types.ModuleType):  # a module Miles imports but never uses while building the command
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})
for name in ("httpx",):
    try:
        __import__(name)
    except ImportError:
        sys.modules[name] = Absent(name)
import miles.utils.external_utils.command_utils as U
U.create_run_id = lambda *a, **k: "rlpipe-fixture"  # a time stamp otherwise; the fixtures stay stable
spec = importlib.util.spec_from_file_location("rlpipe_launcher", launcher)
mod = importlib.util.module_from_spec(spec)
sys.modules["rlpipe_launcher"] = mod
spec.loader.exec_module(mod)
cls = getattr(mod, "ScriptArgs", None)
fn = next((getattr(mod, n) for n in ("execute", "_execute_train", "_train") if hasattr(mod, n)), None)
if fn is None:
    sys.exit("rlpipe: no execute / _execute_train / _train function")
if cls is None:  # a launcher of module-level constants: execute()
    fn()
else:
    fn(cls(), **KWARGS)
"""
# Per launcher (path in the Miles checkout): environment its ScriptArgs() defaults need (node counts it has a
# parallel layout for), and keyword arguments of its command-building function.
LAUNCHER_ENV: dict[str, dict[str, str]] = {
    "scripts/run_inkling.py": {"SLURM_JOB_NUM_NODES": "16"},
    "scripts/run_nemotron_3_ultra_550b_a55b.py": {"SLURM_JOB_NUM_NODES": "16"},
    "examples/swe-agent-harbor-docker/run-glm47-flash-agentic-async.py": {"SLURM_JOB_NUM_NODES": "2"},
    "examples/experimental/formal_math/single_round/run_sft.py": {"MILES_DATASET_TRANSFORM_ID": "rlpipe-fixture"},
}
LAUNCHER_KWARGS: dict[str, dict[str, object]] = {"examples/multi_lora/run_multi_lora.py": {"service": False}}


def launcher_argv(checkout: Path, launcher: Path, env: Mapping[str, str] | None = None) -> tuple[list[str] | None, str]:
    """Build the train command of one of Miles' Python launchers (scripts/run_*.py) without running anything:
    import it from a Miles checkout, make its `ScriptArgs()` defaults and call its command-building function
    (`execute` / `_execute_train` / `_train`, skipping the download/convert steps) with every shell command it
    issues going to the stubs. Returns (the recorded `ray job submit ... -- python3 train.py ...` argv with the
    checkout path written as /root/miles, or None; stderr). Needs typer and ray importable by this Python. The
    launcher's own Python runs for real: file writes, mkdir/rename/remove outside the sandbox are made no-ops."""
    rel = launcher.relative_to(checkout).as_posix() if launcher.is_relative_to(checkout) else ""
    with sandbox() as box:
        full = box.env({"PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1", **LAUNCHER_ENV.get(rel, {})})
        full.update(env or {})
        kwargs = json.dumps(LAUNCHER_KWARGS.get(rel, {}))
        cmd = [sys.executable, "-c", _LAUNCHER_RUNNER, str(checkout), str(launcher), kwargs]
        _, err = _run(cmd, full, box.work, 120)
        if not box.argv_file.exists():
            return None, err
        words = [w.decode() for w in box.argv_file.read_bytes().split(b"\0")[:-1]]
    return [w.replace(str(checkout), "/root/miles") for w in words], err


def main() -> int:
    """Per corpus entry: did bash (or the .argv file) give a train argv, and how many flags."""
    ok = 0
    entries = corpus()
    for path in entries:
        rel = path.relative_to(CORPUS_DIR)
        if path.suffix == ".argv":
            words, note = argv_file_words(path), "argv file"
        else:
            run = run_script(path)
            words = run.argv
            status = "timeout" if run.returncode is None else f"rc={run.returncode}"
            note = ", ".join(
                [status]
                + ([f"not found: {' '.join(run.not_found)}"] if run.not_found else [])
                + ([f"unbound set empty: {' '.join(run.unbound)}"] if run.unbound else [])
                + [s.replace(str(CORPUS_DIR) + "/", "") for s in run.stubbed]
            )
        if words is None:
            print(f"NO-ARGV  {rel}  ({note})")
            continue
        ok += 1
        flags = sum(w.startswith("--") for w in words[1:])
        print(f"argv     {rel}  {words[0]}: {flags} flags, {len(words) - 1} words  ({note})")
    print(f"{ok}/{len(entries)} entries gave a train argv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
