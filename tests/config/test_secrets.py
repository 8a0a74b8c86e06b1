"""Secrets never leave the process: config errors, `--cfg job`, `--miles`, the start-of-run table,
resolved_config.yaml, reward-service errors and server log excerpts all redact them, while the run keeps the real
values and the host names stay visible (so a message still says which service it is about)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from rlpipe.cli import main
from rlpipe.config import ConfigError, Problem, load
from rlpipe.config.render import derived_rows, print_summary, to_yaml
from rlpipe.config.secrets import REDACTED, argv_secrets, is_secret_key, redact, redact_text, redact_url
from rlpipe.data.sample import Sample
from rlpipe.reward import RewardContext, RewardServiceError, score_samples
from rlpipe.reward.remote import parse_reward_reply, remote_reward
from rlpipe.rollout.sglang.process import ManagedProcess

PASSWORD = "hunter2-pw-9f8e"
TOKEN = "tok-5ecret-77aa"
API_KEY = "sk-live-0c0ffee"
SECRETS = (PASSWORD, TOKEN, API_KEY)
HOST = "rm.example.com"
URL = f"http://alice:{PASSWORD}@{HOST}:8000/score?token={TOKEN}&mode=fast"
DATA_HOST = "data.example.com"
DATA_URL = f"https://bob:{PASSWORD}@{DATA_HOST}/train.jsonl?access_token={TOKEN}"
SECRET_OVERRIDES = ["rollout.rm_type=remote", f"rollout.rm_url='{URL}'", f"+sglang.extra.api_key={API_KEY}"]
GLM4 = ["experiment=glm4-9b-dapo", *SECRET_OVERRIDES]


def assert_clean(text: str, host: str = HOST) -> None:
    """No secret in `text`, and the host it is about still named."""
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{leaked} leaked in:\n{text}"
    assert host in text


# ----------------------------------------------------------------------------------------------- the module
@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "sglang.extra.api_key",
        "admin_api_key",
        "--api-key",
        "hf_token",
        "access_token",
        "HF_TOKEN",
        "WANDB_API_KEY",
        "--wandb-key",
        "ssl_keyfile_password",
        "client_secret",
        "apiKey",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name", ["max_tokens_per_gpu", "stop_token_ids", "input_key", "label_key", "tokenizer_path", "key", "rm_url"]
)
def test_ordinary_names(name: str) -> None:
    assert not is_secret_key(name)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (URL, f"http://alice:{REDACTED}@{HOST}:8000/score?token={REDACTED}&mode=fast"),
        ("https://ghp_abc123@github.com/o/r.git", f"https://{REDACTED}@github.com/o/r.git"),
        (
            "https://h/x?key=k1&sig=s1&api_key=a1&page=2",
            f"https://h/x?key={REDACTED}&sig={REDACTED}&api_key={REDACTED}&page=2",
        ),
        ("https://h/cb#access_token=t1&state=ok", f"https://h/cb#access_token={REDACTED}&state=ok"),
        ("http://127.0.0.1:30000/health", "http://127.0.0.1:30000/health"),
        ("/plain/path.jsonl", "/plain/path.jsonl"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # idempotent


def test_redact_text_finds_urls_pairs_and_known_values() -> None:
    text = (
        f"POST {URL} failed; server_args=ServerArgs(api_key='{API_KEY}', port=30000) "
        f'{{"hf_token": "{TOKEN}"}} rollout.rm_url={URL} x --api-key={API_KEY}'
    )
    shown = redact_text(text)
    assert_clean(shown)
    assert "port=30000" in shown and f"api_key='{REDACTED}'" in shown and f'"hf_token": "{REDACTED}"' in shown
    assert redact_text(f"value {PASSWORD}!", known=[PASSWORD]) == f"value {REDACTED}!"
    assert redact_text("fix: write it as key=value") == "fix: write it as key=value"  # prose stays prose


def test_redact_text_hides_secret_environment_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh12345")
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    monkeypatch.setenv("RLPIPE_UNRELATED", "0123456789abcdef-not-secret")
    shown = redact_text("/models/hf_abcdefgh12345/x and key 0123456789abcdef")
    assert "hf_abcdefgh12345" not in shown and "0123456789abcdef" not in shown
    problem = Problem("ckpt.hf_checkpoint", "cannot read it", value="/cache/hf_abcdefgh12345/model")
    assert "hf_abcdefgh12345" not in problem.render() and "/cache/" in problem.render()


def test_redact_nested_values_by_key_name() -> None:
    value = {"api_key": API_KEY, "headers": {"Authorization": f"Bearer {TOKEN}"}, "urls": [URL], "n": 3, "tok": None}
    shown = redact(value)
    assert shown == {
        "api_key": REDACTED,
        "headers": {"Authorization": REDACTED},
        "urls": [redact_url(URL)],
        "n": 3,
        "tok": None,
    }
    assert value["api_key"] == API_KEY  # a copy: the original keeps the secret
    assert redact(API_KEY, "sglang.extra.api_key") == REDACTED and redact(True, "use_token") is True


def test_argv_secrets() -> None:
    argv = ["python", "-m", "sglang.launch_server", "--api-key", API_KEY, "--admin-api-key=adm1n", "--port", "1"]
    assert argv_secrets(argv) == [API_KEY, "adm1n"]


# ------------------------------------------------------------------------------------------ where it is used
def test_run_keeps_the_real_values() -> None:
    cfg = load(GLM4, check_paths=False).cfg
    assert cfg.rollout.rm_url == URL and cfg.sglang.extra["api_key"] == API_KEY


def test_config_errors_redact(recipe: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # a secret-holding config with an unrelated bad value: the error still prints, the secrets do not
    with pytest.raises(ConfigError) as info:
        load([*recipe, *SECRET_OVERRIDES, "rollout.n_samples=0"])
    assert "rollout.n_samples (got 0)" in info.value.render()
    assert not any(s in info.value.render() for s in SECRETS)
    # an error whose `got` is a URL with credentials
    with pytest.raises(ConfigError) as info:
        load([*recipe, *SECRET_OVERRIDES, f"rollout.prompt_data='{URL}'"])
    assert "rollout.prompt_data (got 'http://alice:<redacted>@rm.example.com" in info.value.render()
    assert_clean(info.value.render())
    assert_clean(str(info.value))
    # the CLI's path, and an override Hydra cannot parse (the whole override is echoed as the key)
    assert main([*recipe, f"rollout.rm_url={URL}", f"sglang.extra.api_key={API_KEY}'"]) == 2
    assert_clean(capsys.readouterr().err)
    # a problem whose value is the URL, and one whose value holds a secret-named key
    assert_clean(Problem("rollout.rm_url", "unreachable", "check the host", URL).render())
    shown = Problem("sglang.extra", "bad", value={"api_key": API_KEY, "url": URL}).render()
    assert_clean(shown)
    assert REDACTED in shown


def test_cfg_job_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*GLM4, "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert_clean(out)
    shown = yaml.safe_load(out)
    assert shown["rollout"]["rm_url"] == redact_url(URL) and shown["sglang"]["extra"]["api_key"] == REDACTED


def test_resolved_config_yaml_redacts() -> None:
    """run.py writes to_yaml(run) to outputs/<run>/resolved_config.yaml."""
    run = load([*GLM4, f"rollout.prompt_data='{DATA_URL}'"], check_paths=False)
    text = to_yaml(run)
    assert_clean(text)
    assert DATA_HOST in text


def test_miles_export_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*GLM4, "--miles"]) == 0
    out = capsys.readouterr().out
    assert_clean(out)
    assert '--rm-url "${RLPIPE_SECRET_RM_URL:?}"' in out
    assert '--sglang-api-key "${RLPIPE_SECRET_SGLANG_API_KEY:?}"' in out
    assert "#   RLPIPE_SECRET_RM_URL  (--rm-url http://alice:<redacted>@rm.example.com:8000" in out


def test_start_of_run_table_redacts(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # rich folds long values at the terminal width
    run = load([*GLM4, f"rollout.prompt_data='{DATA_URL}'"], check_paths=False)
    print_summary(run)
    assert_clean(capsys.readouterr().out, DATA_HOST)
    assert not any(s in str(derived_rows(run)) for s in SECRETS)


# ----------------------------------------------------------------------------------------- reward service
def _ctx(url: str) -> RewardContext:
    return RewardContext(
        rm_type="remote",
        eos_token_id=1,
        special_token_ids=frozenset({1}),
        decode=lambda ids: "",
        rm_url=url,
        timeout_s=2.0,
        max_retries=1,
        retry_backoff_s=0.01,
    )


def test_reward_reply_error_redacts() -> None:
    with pytest.raises(RewardServiceError) as info:
        parse_reward_reply({"score": 1.0}, URL)
    assert_clean(str(info.value))


def test_reward_service_down_error_redacts() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # bound, never listening: connections refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"http://alice:{PASSWORD}@127.0.0.1:{port}/score?token={TOKEN}"
        with pytest.raises(RewardServiceError) as info:
            asyncio.run(remote_reward(Sample(prompt="p"), _ctx(url)))
        assert_clean(str(info.value), f"127.0.0.1:{port}")
        with pytest.raises(Exception) as wrapped:  # the reward hub's own error around it
            asyncio.run(score_samples([Sample(prompt="p")], _ctx(url)))
        assert_clean(str(wrapped.value), f"127.0.0.1:{port}")


def test_reward_service_rejection_redacts_and_the_real_url_is_called() -> None:
    """The service answers 404 and echoes the token: the error hides both, yet the request carried them."""
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(status=404, text=f"no route for token={request.query['token']}")

    async def scenario() -> str:
        app = web.Application()
        app.router.add_post("/score", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        try:
            url = f"http://alice:{PASSWORD}@127.0.0.1:{port}/score?token={TOKEN}"
            with pytest.raises(RewardServiceError) as info:
                await remote_reward(Sample(prompt="p"), _ctx(url))
            return str(info.value)
        finally:
            await runner.cleanup()

    message = asyncio.run(scenario())
    assert_clean(message, "127.0.0.1")
    assert "HTTP 404" in message
    assert seen and seen[0].query["token"] == TOKEN
    assert seen[0].headers["Authorization"].startswith("Basic ")  # aiohttp sends the URL's user:password


# --------------------------------------------------------------------------------------------- server logs
def test_server_log_tail_redacts(tmp_path: Path) -> None:
    """SGLang prints its ServerArgs (api_key included) at start-up; error messages quote the log's tail."""
    log = tmp_path / "sglang_engine_0.log"
    log.write_text(
        f"server_args=ServerArgs(model_path='/m', api_key='{API_KEY}', port=30000)\n"
        f"[launch] --api-key {API_KEY} given\nconnecting to {URL}\n"
    )
    argv = ["python", "-m", "sglang.launch_server", "--model-path", "/m", "--api-key", API_KEY]
    tail = ManagedProcess(argv, "http://127.0.0.1:1/health", log).log_tail()
    assert_clean(tail)
    assert "port=30000" in tail
