"""Cluster files checked with the real validators and parsers (Ray's cluster-config schema,
the `ray job submit` and `tadm` command lines), and the job entry points run as a Ray job runs
them: `tadm` in a process of its own, joined to the session's Ray through RAY_ADDRESS."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import can_hide_a_folder, cli_env, encode, make_bucket, photo, write_tree
from PIL import Image
from ray._raylet import GcsClient
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.cluster_utils import Cluster
from ray.dashboard.modules.job.cli import submit

from jobs import archive, restore, serve
from pipeline.format import ARCHIVE_SCHEMA, MANIFEST_DIR
from pipeline.manifest import read_manifest
from pipeline.storage import Location

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"
PARSERS = {"archive": archive.parser, "restore": restore.parser, "serve": serve.parser}


def cluster_config() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def tadm_args(argv: list[str]) -> tuple[str, argparse.Namespace]:
    """(subcommand, its parsed arguments) of a `tadm ...` command line; fails on bad usage."""
    assert argv[0] == "tadm" and argv[1] in PARSERS, argv
    try:
        return argv[1], PARSERS[argv[1]]().parse_args(argv[2:])
    except SystemExit:
        pytest.fail(f"not a valid command line: {shlex.join(argv)}")


# ---- cluster.yaml ------------------------------------------------------------------------------


def test_cluster_yaml_passes_rays_own_validation():
    validate_config(prepare_config(cluster_config()))


def test_a_misspelt_field_fails_that_validation():
    config = cluster_config()
    config["available_node_types"]["gpu_worker"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(config))


def test_cluster_yaml_layout():
    config = cluster_config()
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert head["resources"]["CPU"] == 0  # the head takes no work
    assert any("--num-cpus=0" in c for c in config["head_start_ray_commands"])
    gpu_types = [n for n in nodes.values() if n.get("resources", {}).get("GPU", 0) >= 1]
    assert len(gpu_types) == 1
    worker = gpu_types[0]
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1
    assert worker["node_config"]["InstanceType"].startswith("g5.")
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    for node in nodes.values():  # S3 through an instance profile, on every node
        assert node["node_config"]["IamInstanceProfile"]["Name"]
    setup = config["setup_commands"]
    torch_step = next(i for i, c in enumerate(setup) if "torch" in c)
    (checkout,) = config["file_mounts"]
    assert setup.index(f"pip install -q {checkout}") > torch_step  # torch, then the project
    assert config["file_mounts"][checkout] == "." and ".gitignore" in config["rsync_filter"]


# ---- KubeRay manifests -----------------------------------------------------------------------


def rayjob_checks(job: dict[str, Any]) -> None:
    """A RayJob whose entrypoint is a valid `tadm archive` that fits its cluster."""
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    name, args = tadm_args(shlex.split(spec["entrypoint"]))
    assert name == "archive"
    for uri in (args.src, args.dst):
        assert Location.parse(uri).protocol == "s3"
    assert spec["shutdownAfterJobFinishes"] is True and spec["activeDeadlineSeconds"] > 0
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    gpus = 0
    for group in cluster["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        gpus += group["replicas"] * int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert args.workers * args.gpus_per_worker <= gpus  # every model actor gets its GPU
    pods = [head["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    assert {p["spec"]["serviceAccountName"] for p in pods} == {"tadm-archive"}
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert len(images) == 1


def test_rayjob_manifest():
    rayjob_checks(yaml.safe_load((KUBERAY / "rayjob-archive.yaml").read_text()))
    account = yaml.safe_load((KUBERAY / "serviceaccount.yaml").read_text())
    assert account["kind"] == "ServiceAccount" and account["metadata"]["name"] == "tadm-archive"
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:")


def test_nightly_cronjob_creates_the_same_rayjob():
    text = (KUBERAY / "cronjob-archive.yaml").read_text()
    docs = {d["kind"]: d for d in yaml.safe_load_all(text)}
    assert set(docs) == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "CronJob"}
    cron = docs["CronJob"]["spec"]
    assert len(cron["schedule"].split()) == 5 and cron["concurrencyPolicy"] == "Forbid"

    template = yaml.safe_load(docs["ConfigMap"]["data"]["rayjob.yaml"])
    rayjob_checks(template)
    single = yaml.safe_load((KUBERAY / "rayjob-archive.yaml").read_text())
    assert template["spec"] == single["spec"]

    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    (volume,) = pod["volumes"]
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    (create,) = pod["containers"]
    (mount,) = create["volumeMounts"]
    assert create["args"] == ["create", "-f", f"{mount['mountPath']}/rayjob.yaml"]
    (delete,) = pod["initContainers"]
    label = f"app.kubernetes.io/name={template['metadata']['labels']['app.kubernetes.io/name']}"
    assert delete["args"][:2] == ["delete", "rayjobs"] and f"--selector={label}" in delete["args"]

    account = docs["ServiceAccount"]["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    (rule,) = docs["Role"]["rules"]
    assert rule["resources"] == ["rayjobs"] and {"create", "delete"} <= set(rule["verbs"])
    binding = docs["RoleBinding"]
    assert binding["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]


# ---- docs/cluster.md -------------------------------------------------------------------------


def doc_commands(prefix: str) -> list[list[str]]:
    """The shell commands of docs/cluster.md's bash blocks that start with `prefix`."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.startswith(prefix)]


def test_docs_job_submissions_are_valid_command_lines():
    commands = doc_commands("ray job submit")
    seen = set()
    for argv in commands:
        context = submit.make_context("submit", argv[3:])  # ray's own option parser
        name, _ = tadm_args(list(context.params["entrypoint"]))
        seen.add(name)
    assert seen == {"archive", "restore", "serve"}


def test_docs_kubectl_files_exist():
    for argv in doc_commands("kubectl"):
        for i, arg in enumerate(argv[:-1]):
            if arg == "-f":
                assert (ROOT / argv[i + 1]).is_file(), argv


# ---- the entry points on the session's Ray -----------------------------------------------------


def test_archive_as_a_ray_job_runs_it(ray_cluster, tiny_model, s3_env):
    """The nightly entrypoint on an S3 prefix, as `ray job submit` runs it: `tadm` in a process
    of its own that joins the running Ray through RAY_ADDRESS. (tests/test_serve.py runs
    `tadm restore` on the same Ray.)"""
    make_bucket(s3_env, "nightly")
    bucket = Location.parse("s3://nightly")
    fs = bucket.filesystem()
    for rel_path in ("day1/0.png", "day2/0.png"):
        png = encode(Image.fromarray(photo(64, 48, len(rel_path))), "PNG")
        fs.pipe_file(f"nightly/incoming/{rel_path}", png)
    argv = ["archive", "s3://nightly/incoming", "s3://nightly/archive", "--model", tiny_model]
    job = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *argv],
        env=cli_env(ray_cluster),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    assert "archive: 2 images: 2 ok, no errors, " in job.stderr
    rows = read_manifest(bucket.child("archive", MANIFEST_DIR), ARCHIVE_SCHEMA).to_pylist()
    assert {row["rel_path"]: row["status"] for row in rows} == {
        "day1/0.png": "ok",
        "day2/0.png": "ok",
    }
    assert fs.isfile("nightly/archive/lr/day2/0.png.png")


def test_every_manifest_example_is_a_copy_of_the_checked_ones():
    """No manifest under deploy/kuberay/ escapes the checks above (the RayService's are in
    tests/pipeline/serve/test_deploy.py)."""
    checked = {"rayjob-archive.yaml", "cronjob-archive.yaml", "serviceaccount.yaml"}
    checked.add("rayservice-tiles.yaml")
    assert {p.name for p in KUBERAY.glob("*.yaml")} == checked


# ---- local paths on a multi-node cluster -------------------------------------------------------


def alive_nodes(address: str) -> int:
    return sum(node.state == 0 for node in GcsClient(address=address).get_all_node_info().values())


@pytest.mark.slow
@pytest.mark.skipif(not can_hide_a_folder(), reason="needs `unshare -m` (root)")
def test_a_local_path_one_node_does_not_see_is_refused_before_anything_is_written(
    tiny_model, tmp_path
):
    """A two-node cluster whose worker node runs in a mount namespace of its own with an empty
    tmpfs over `private`, so that a folder there is on the driver's node only, as a local disk
    is on a real cluster: a DST there, then a SRC there, is refused (exit 2) naming the node,
    before any image is read or anything but the lease is written."""
    private = tmp_path / "private"
    photos = {f"{i}.png": encode(Image.fromarray(photo(64, 48, i)), "PNG") for i in range(4)}
    src, hidden_src = write_tree(tmp_path / "src", photos), write_tree(private / "src", photos)
    dst, hidden_dst = tmp_path / "archive", private / "archive"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    node = None
    try:
        ray_cli = Path(sys.executable).with_name("ray")
        start = (
            f"mount -t tmpfs tmpfs {private} && exec {ray_cli} start --block "
            f"--address={cluster.address} --num-cpus=1 --disable-usage-stats"
        )
        node = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", start],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while alive_nodes(cluster.address) < 2:
            assert node.poll() is None and time.monotonic() < deadline, "no second node"
            time.sleep(0.5)
        env = cli_env(cluster.address)
        for given_src, given_dst, refused in [(src, hidden_dst, "DST"), (hidden_src, dst, "SRC")]:
            argv = ["archive", str(given_src), str(given_dst), "--model", tiny_model]
            job = subprocess.run(
                [sys.executable, "-m", "jobs.cli", *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert job.returncode == 2, job.stderr[-3000:]
            given = given_dst if refused == "DST" else given_src
            assert re.search(
                rf"tadm archive: error: {refused} '{given}' is a local path that node [\d.]+ "
                r"of the Ray cluster does not see \(.*\): every node runs the job's tasks",
                job.stderr,
            ), job.stderr[-3000:]
            assert sorted(p.name for p in given_dst.rglob("*")) == ["manifest"]  # lease gone
    finally:
        if node is not None:
            os.killpg(node.pid, signal.SIGTERM)  # `ray start --block` stops the node's processes
            node.wait(60)
        cluster.shutdown()
