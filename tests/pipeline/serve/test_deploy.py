"""The ways Ray users deploy the tile server: the Serve config file (`serve deploy`) and the
KubeRay RayService, checked against Serve's own schema and the application builder."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from pipeline.serve.app import APP_NAME, TileAppArgs, build_app

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "deploy" / "serve" / "tadm-tiles.yaml"
KUBERAY = ROOT / "deploy" / "kuberay"


def builder(import_path: str):
    module, name = import_path.split(":")
    return getattr(importlib.import_module(module), name)


def test_serve_config_is_valid_and_names_the_builder():
    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (application,) = config.applications
    assert (application.name, application.route_prefix) == (APP_NAME, "/")
    assert builder(application.import_path) is build_app
    args = TileAppArgs.model_validate(application.args)  # as Serve converts them
    assert args.archive.startswith("s3://") and args.gpus_per_replica == 1
    assert config.http_options.port == 8000 and config.http_options.host == "0.0.0.0"


def test_rayservice_runs_the_same_applications_on_the_rayjob_cluster():
    service = yaml.safe_load((KUBERAY / "rayservice-tiles.yaml").read_text())
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    applications = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert applications == yaml.safe_load(CONFIG.read_text())["applications"]
    ServeDeploySchema.model_validate({"applications": applications})

    cluster = service["spec"]["rayClusterConfig"]
    job = yaml.safe_load((KUBERAY / "rayjob-archive.yaml").read_text())["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == job["rayVersion"]
    pods = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    assert {p["spec"]["serviceAccountName"] for p in pods} == {"tadm-archive"}
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert images == {job["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]}

    # every replica the autoscaler may ask for fits on the GPU workers
    args = TileAppArgs.model_validate(applications[0]["args"])
    (workers,) = cluster["workerGroupSpecs"]
    (container,) = workers["template"]["spec"]["containers"]
    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
    cpus = int(container["resources"]["limits"]["cpu"])
    per_node = min(gpus / args.gpus_per_replica, cpus / args.cpus_per_replica)
    assert per_node >= 1 and workers["maxReplicas"] * int(per_node) >= args.max_replicas
    assert cluster["enableInTreeAutoscaling"] is True
    assert workers["minReplicas"] * per_node >= args.min_replicas
