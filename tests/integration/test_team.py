"""Team round trips: what one person builds, another gets without recomputing.

On copies of the tiny built repository, each with a bare git remote (`origin`) and the project's default
DVC remote (`storage`, the directory `rakuten-dvc-storage` next to the clone, as committed in
`.dvc/config`):
- push from clone A, `dvc pull` in a fresh clone B: every stage up to date, nothing recomputes, no metrics diff;
  pulling only the models, `dvc repro --allow-missing` recomputes nothing either;
- a queue of experiments run in A by two `dvc queue` workers, `dvc exp push`, then `dvc exp pull` / `show` /
  `apply` / `metrics diff` in a fresh clone;
- push and pull through a real S3-protocol server on 127.0.0.1, credentials from the environment, the
  server going away mid-push: a clear error, and a retry completes with every object whole;
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.dvc_repo import copy_built_repo, dvc, git
from tests.helpers.s3_server import ACCESS_KEY, SECRET_KEY, Outage, S3Server

pytestmark = pytest.mark.slow
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
NO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "",
    "AWS_SECRET_ACCESS_KEY": "",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
}


@pytest.fixture(scope="module")
def team(tiny_built_repo, tmp_path_factory) -> Path:
    """A folder holding clone A (`a/`, built), the bare git remote `origin.git` it pushed to, and, once
    pushed, the default DVC remote `rakuten-dvc-storage/`."""
    root = tmp_path_factory.mktemp("team")
    a = copy_built_repo(tiny_built_repo, root / "a")
    git("init", "-q", "--bare", "-b", "main", str(root / "origin.git"), cwd=root)
    git("remote", "add", "origin", str(root / "origin.git"), cwd=a)
    git("push", "-q", "origin", "main", cwd=a)
    return root


def fresh_clone(team: Path, name: str) -> Path:
    git("clone", "-q", str(team / "origin.git"), str(team / name), cwd=team)
    return team / name


def status(repo: Path) -> dict:
    return json.loads(dvc("status", "--json", cwd=repo).stdout)


def cached_outs(repo: Path) -> list[str]:
    """Every stage output DVC caches (so pushes): models, probability tables, data; the metrics and
    plots with `cache: false` travel by git."""
    outs = []
    for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values():
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path, opts = next(iter(out.items())) if isinstance(out, dict) else (out, {})
            if opts.get("cache", True):
                outs.append(path)
    return outs


def assert_same_results(repo: Path, reference: Path) -> None:
    """Up to date (DVC rehashes the workspace against dvc.lock), nothing to rerun, the same metrics."""
    assert status(repo) == {}
    result = dvc("repro", cwd=repo)
    assert "Running stage" not in result.stdout and "Data and pipelines are up to date" in result.stdout
    assert json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout) == {}
    for rel in ("reports/probs/fusion.parquet", "reports/submission.csv", "reports/metrics.json"):
        assert (repo / rel).read_bytes() == (reference / rel).read_bytes(), rel


def test_the_default_remote_is_a_directory_next_to_the_clone(team):
    listed = dvc("remote", "list", cwd=team / "a").stdout.split()
    assert listed[:2] == ["storage", str(team / "rakuten-dvc-storage")]
    assert dvc("remote", "default", cwd=team / "a").stdout.strip() == "storage"


def test_push_then_fresh_clones_pull_everything_or_only_the_models_and_recompute_nothing(team):
    """A full pull leaves nothing to rerun; so does pulling only what `rakuten predict` needs, the models,
    with `dvc repro --allow-missing` (it skips the stages whose only change is data left on the remote)."""
    a = team / "a"
    dvc("push", cwd=a)
    assert json.loads(dvc("status", "--cloud", "--json", cwd=a).stdout) == {}  # remote holds A's cache
    b = fresh_clone(team, "b")
    for rel in cached_outs(b):
        assert not (b / rel).exists(), rel  # git alone does not carry them
    dvc("pull", cwd=b)
    for rel in cached_outs(b):
        assert (b / rel).exists(), rel
    assert_same_results(b, a)

    g = fresh_clone(team, "g")
    models = [path for path in cached_outs(g) if path.startswith("models/")]
    dvc("pull", *models, cwd=g)
    assert all((g / path).is_dir() for path in models) and not (g / "data/processed").exists()
    result = dvc("repro", "--allow-missing", cwd=g)
    assert "Running stage" not in result.stdout and "Data and pipelines are up to date" in result.stdout
    for path in models:
        assert sorted(p.name for p in (g / path).iterdir()) == sorted(p.name for p in (a / path).iterdir())


def test_a_tampered_remote_object_is_refused_by_dvc_pull_and_never_loaded(team, tmp_path):
    """Someone who can write to the DVC remote replaces `models/fusion/fusion.joblib` with a pickle whose
    payload writes a marker. The committed remote has `verify = true`: `dvc pull` re-hashes what it
    downloads and refuses to check the folder out. With verification switched off (DVC's default), the
    pull succeeds and `dvc status` is clean, but `rakuten predict` checks the folder against dvc.lock and
    refuses it in one line: the payload never runs."""
    import pickle

    from tests.core.test_integrity import Payload
    from tests.helpers.dvc_repo import predict_cli

    a = team / "a"
    assert "verify = true" in (a / ".dvc/config").read_text()
    dvc("push", cwd=a)
    lock = yaml.safe_load((a / "dvc.lock").read_text())
    fusion_dir = next(o["md5"] for o in lock["stages"]["fusion"]["outs"] if o["path"] == "models/fusion")
    listing = json.loads((a / ".dvc/cache/files/md5" / fusion_dir[:2] / fusion_dir[2:]).read_text())
    target_md5 = next(e["md5"] for e in listing if e["relpath"] == "fusion.joblib")
    obj = team / "rakuten-dvc-storage/files/md5" / target_md5[:2] / target_md5[2:]
    original = obj.read_bytes()
    marker = tmp_path / "pwned"
    obj.chmod(0o644)
    obj.write_bytes(pickle.dumps(Payload(marker)))
    try:
        c = fresh_clone(team, "tampered")
        pulled = dvc("pull", "models/fusion", cwd=c, check=False)
        assert pulled.returncode != 0 and "Checkout failed" in pulled.stderr, pulled.stderr[-2000:]
        assert not (c / "models/fusion/fusion.joblib").exists()

        d = fresh_clone(team, "unverified")
        dvc("remote", "modify", "--local", "storage", "verify", "false", cwd=d)
        dvc("pull", cwd=d)
        assert status(d) == {}  # DVC trusts the object's name: nothing looks wrong
        result = predict_cli(d, tmp_path / "p.csv", check=False)
        assert result.returncode == 2
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: models/fusion/fusion.joblib: md5 "), errors
        assert f"expected {target_md5}" in errors[0] and "Traceback" not in result.stderr
        assert not marker.exists() and not (tmp_path / "p.csv").exists()
    finally:
        obj.write_bytes(original)


def named(node, name: str) -> list[dict]:
    """The revisions called ``name`` anywhere in `dvc exp show --json` output (the ones with data)."""
    if isinstance(node, list):
        return [found for item in node for found in named(item, name)]
    if not isinstance(node, dict):
        return []
    return ([node] if node.get("name") == name and "data" in node else []) + [
        found for value in node.values() for found in named(value, name)
    ]


@pytest.fixture(scope="module")
def s3(team):
    server = S3Server()
    yield server
    server.stop()


def add_s3_remote(repo: Path, name: str, bucket: str, endpoint: str) -> None:
    """What a team commits: the bucket and endpoint, never the keys (they come from the environment)."""
    dvc("remote", "add", name, f"s3://{bucket}/rakuten", cwd=repo)
    dvc("remote", "modify", name, "endpointurl", endpoint, cwd=repo)
    git("commit", "-qam", f"DVC remote {name}", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)


def test_s3_push_survives_the_server_going_away_and_a_fresh_clone_pulls_it(team, s3):
    """Through a real S3-protocol server, keys from the environment: the server goes away a third of the
    way into the push (a clear error, no hang); once it is back a retry completes, every object is whole,
    and a fresh clone pulls it all (not without the keys, which are in no committed file)."""
    a = team / "a"
    s3.make_bucket("rakuten-team")
    pushed_bytes = sum(p.stat().st_size for p in (a / ".dvc/cache").rglob("*") if p.is_file())
    outage = Outage(s3.port, bytes_before_outage=pushed_bytes // 3)  # about a third of the way
    try:
        add_s3_remote(a, "s3team", "rakuten-team", outage.endpoint)
        started = time.monotonic()
        # one attempt per file (botocore retries a refused connection 5 times with backoff by default:
        # the same outcome, minutes later with the tiny repository's hundreds of files)
        failed = dvc(
            "push", "-r", "s3team", cwd=a, check=False, env={**CREDENTIALS, "AWS_MAX_ATTEMPTS": "1"}, timeout=300
        )
        assert outage.tripped.is_set()
        assert failed.returncode != 0
        errors = [line for line in failed.stderr.splitlines() if line.startswith("ERROR:")]
        assert errors and all(
            f'Could not connect to the endpoint URL: "{outage.endpoint}/' in line for line in errors
        ), failed.stderr  # names what failed and where
        assert "Traceback" not in failed.stderr
        assert time.monotonic() - started < 240  # retries are bounded: an error, not a hang
        outage.restore()
        missing = json.loads(dvc("status", "--cloud", "-r", "s3team", "--json", cwd=a, env=CREDENTIALS).stdout)
        assert missing, "the outage left nothing to retry: it did not happen mid-push"
        dvc("push", "-r", "s3team", cwd=a, env=CREDENTIALS)
        assert json.loads(dvc("status", "--cloud", "-r", "s3team", "--json", cwd=a, env=CREDENTIALS).stdout) == {}
        stored = s3.objects("rakuten-team")  # every object whole: its MD5 (the ETag of a PUT) is its name
        assert stored and all(
            etag == key.split("/md5/")[1].replace("/", "").removesuffix(".dir") for key, etag in stored.items()
        ), stored

        d = fresh_clone(team, "d")
        denied = dvc("pull", "-r", "s3team", cwd=d, check=False, env=NO_CREDENTIALS)
        assert denied.returncode != 0  # the keys are not in the clone: without them, no data
        dvc("pull", "-r", "s3team", cwd=d, env=CREDENTIALS)
        assert_same_results(d, a)
    finally:
        outage.close()
    committed = git("grep", "-I", "-l", SECRET_KEY, "HEAD", "--", ".dvc", "dvc.yaml", "params.yaml", cwd=d, check=False)
    assert committed.returncode == 1 and not committed.stdout  # not in the DVC config the team shares
    assert not (a / ".dvc/config.local").exists()


def test_queued_experiments_run_by_two_workers_travel_with_exp_push_and_pull(team):
    """The GPU-box routine: queue a sweep in A, let `dvc queue start -j 2` run it with two workers, push
    the experiments; a fresh clone's `dvc exp pull` brings them, `dvc exp show` lists their params and
    metrics, and `dvc exp apply` restores one's outputs without rerunning anything."""
    a = team / "a"
    sweep = {"vote": ("fusion", "strategy", "max_rule"), "step-025": ("fusion", "weight_step", 0.25)}
    for name, (section, key, value) in sweep.items():
        # report.gradcam_examples=0: evaluate skips loading the image model (suite time; the report has its own tests)
        dvc(
            "exp",
            "run",
            "--queue",
            "-n",
            name,
            "-S",
            f"{section}.{key}={value}",
            "-S",
            "report.gradcam_examples=0",
            cwd=a,
        )
    dvc("queue", "start", "-j", "2", cwd=a)
    deadline = time.monotonic() + 400
    while True:
        listing = dvc("queue", "status", cwd=a).stdout
        if not any(state in listing for state in ("Queued", "Running")):
            break
        assert time.monotonic() < deadline, listing
        time.sleep(3)
    assert sum(line.split()[-1] == "Success" for line in listing.splitlines() if line.split()) == 2, listing
    log = dvc("queue", "logs", "vote", cwd=a).stdout
    assert "Running stage 'fusion'" in log and "Running stage 'tfidf_svm'" not in log  # only what the param feeds
    dvc("exp", "push", "origin", *sweep, cwd=a)  # git refs to origin, their outputs to the DVC remote

    c = fresh_clone(team, "c")
    dvc("exp", "pull", "origin", *sweep, cwd=c)
    shown = json.loads(dvc("exp", "show", "--json", cwd=c).stdout)
    for name, (section, key, value) in sweep.items():
        [exp] = named(shown, name)
        assert exp["data"]["params"]["params.yaml"]["data"][section][key] == value
        assert exp["data"]["metrics"]["reports/metrics/fusion.json"]["data"]["test"]["weighted_f1"] > 0
    expected = named(shown, "vote")[0]["data"]["metrics"]["reports/metrics/fusion.json"]["data"]
    dvc("exp", "apply", "vote", cwd=c)
    assert yaml.safe_load((c / "params.yaml").read_text())["fusion"]["strategy"] == "max_rule"
    assert json.loads((c / "reports/metrics/fusion.json").read_text()) == expected
    assert status(c) == {}  # its fused model and probabilities restored from the cache, not recomputed
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=c).stdout)  # against the clone's HEAD
    assert diff.get("reports/metrics/fusion.json"), diff
