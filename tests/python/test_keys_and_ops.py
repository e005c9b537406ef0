"""API keys with the official clients, the CLI's key and health check, --print-config,
shell completions and the man page, against a real `hyperllama serve`."""

import os
import subprocess
import tempfile

import ollama
import openai
import pytest

from conftest import BINARY, model_path, start_server, stop

KEY = "sk-pytest-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed():
    home = tempfile.mkdtemp(prefix="hyperllama-keys-")
    proc, base = start_server(home, "--ctx-size", "512", "--parallel", "2",
                              env_extra={"HYPERLLAMA_API_KEYS": f"{KEY},sk-pytest-rotated-key-0000"})
    try:
        c = ollama.Client(host=base, headers={"Authorization": f"Bearer {KEY}"})
        c.create(model="smol", files={"m.gguf": c.create_blob(str(model_path()))})
        yield base
    finally:
        stop(proc)


def test_official_clients_with_and_without_keys(keyed):
    ai = openai.OpenAI(base_url=f"{keyed}/v1", api_key=KEY, max_retries=0)
    r = ai.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert r.usage.completion_tokens >= 1
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=f"{keyed}/v1", api_key="sk-wrong-0000000000000", max_retries=0).models.list()
    assert e.value.status_code == 401
    # The second key works too (rotation).
    ai2 = openai.OpenAI(base_url=f"{keyed}/v1", api_key="sk-pytest-rotated-key-0000", max_retries=0)
    assert any(m.id == "smol:latest" for m in ai2.models.list().data)
    oc = ollama.Client(host=keyed, headers={"Authorization": f"Bearer {KEY}"})
    assert oc.generate(model="smol", prompt="Hi", options={"num_predict": 2}).done
    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=keyed).list()
    assert e.value.status_code == 401


def test_cli_sends_its_key_and_health_needs_none(keyed):
    env = dict(os.environ, HYPERLLAMA_HOST=keyed)
    env.pop("HYPERLLAMA_API_KEY", None)
    r = subprocess.run([str(BINARY), "health"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    r = subprocess.run([str(BINARY), "list"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "401" in r.stderr, r.stderr
    env["HYPERLLAMA_API_KEY"] = KEY
    r = subprocess.run([str(BINARY), "list"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "smol:latest" in r.stdout, r.stderr
    down = subprocess.run([str(BINARY), "health", "--host", "127.0.0.1:9"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert down.returncode != 0


def test_print_config_shows_sources_and_never_keys(tmp_path):
    cfg = tmp_path / "hl.toml"
    cfg.write_text('parallel = 6\nmax_queue = 7\napi_keys = ["sk-from-the-file-000000"]\n')
    env = dict(os.environ, HYPERLLAMA_NUM_PARALLEL="3")
    r = subprocess.run([str(BINARY), "serve", "--config", str(cfg), "--print-config", "--max-queue", "9"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert rows["parallel"].split()[1] == "3" and "env HYPERLLAMA_NUM_PARALLEL" in rows["parallel"]
    assert rows["max_queue"].split()[1] == "9" and rows["max_queue"].endswith("flag")
    assert "1 key(s)" in rows["api_keys"] and "config file" in rows["api_keys"]
    assert "sk-from-the-file" not in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("paralel = 2\n")
    r = subprocess.run([str(BINARY), "serve", "--config", str(bad), "--print-config"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "paralel" in r.stderr


def test_completions_and_man_page():
    for shell in ["bash", "zsh", "fish"]:
        r = subprocess.run([str(BINARY), "completions", shell], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "serve" in r.stdout and "parallel" in r.stdout, shell
    r = subprocess.run([str(BINARY), "man"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and ".TH" in r.stdout, r.stderr
    assert "hyperllama" in r.stdout


def test_https_with_a_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    home = tempfile.mkdtemp(prefix="hyperllama-tls-")
    proc, base = start_server(home, "--ctx-size", "512", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert base.startswith("https://")
        import ssl

        import httpx
        trust = ssl.create_default_context(cafile=str(cert))
        r = httpx.get(f"{base}/health", verify=trust, timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        with pytest.raises(httpx.HTTPError):
            httpx.get(base.replace("https://", "http://") + "/health", timeout=10)
        c = ollama.Client(host=base, verify=trust)
        c.create(model="smol", files={"m.gguf": c.create_blob(str(model_path()))})
        ai = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0,
                           http_client=httpx.Client(verify=trust))
        r = ai.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
        assert r.usage.completion_tokens >= 1
    finally:
        stop(proc)
    # A missing key, or one that does not belong to the certificate, is refused at start.
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-out", str(other)], check=True, capture_output=True)
    for bad_key in [tmp_path / "missing.pem", other]:
        r = subprocess.run([str(BINARY), "serve", "--host", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key",
                            str(bad_key)], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, HYPERLLAMA_MODELS=str(tmp_path / "m")))
        assert r.returncode != 0 and "TLS" in r.stderr, (bad_key, r.stderr)
