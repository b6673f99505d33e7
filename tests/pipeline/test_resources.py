"""pipeline.resources: actors and GPUs from the running Ray (the tests' has 2 CPUs, no GPU)."""

import logging

import pytest
import ray

from pipeline.resources import Resources, cluster_can_grow, plan_resources


def test_cpu_defaults_one_actor_per_core_up_to_four(ray_cluster, monkeypatch):
    assert plan_resources(None, None) == Resources(2, 0.0, 1, "fp32")
    assert plan_resources(1, None) == Resources(1, 0.0, 2, "fp32")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0})
    assert plan_resources(None, None) == Resources(4, 0.0, 4, "fp32")


def test_a_default_plan_starts_no_more_actors_than_batches(ray_cluster):
    """...and gives each the torch threads of a whole pool: the same bytes out, whatever is
    left to do."""
    assert plan_resources(None, None, batches=1) == Resources(1, 0.0, 1, "fp32")
    assert plan_resources(None, None, batches=5) == Resources(2, 0.0, 1, "fp32")
    assert plan_resources(None, None, batches=0) == Resources(1, 0.0, 1, "fp32")
    assert plan_resources(2, None, batches=1) == Resources(2, 0.0, 1, "fp32")  # asked for: kept


def test_gpus_beyond_a_local_ray_are_refused(ray_cluster):
    with pytest.raises(ValueError, match=r"needs 2 GPUs but this local Ray has 0.*RAY_ADDRESS"):
        plan_resources(2, 1.0, can_grow=False)


def test_gpus_beyond_an_autoscaling_cluster_wait_for_it(ray_cluster, caplog, monkeypatch):
    """cluster.yaml's cluster has no GPU node at submit time: the job asks and waits."""
    monkeypatch.setattr(logging.getLogger("tadm"), "propagate", True)  # jobs turn it off
    with caplog.at_level(logging.WARNING, logger="tadm"):
        assert plan_resources(None, 1.0, can_grow=True) == Resources(1, 1.0, None, "fp16")
        assert plan_resources(4, 0.5, can_grow=True) == Resources(4, 0.5, None, "fp16")
    assert "has 0 GPUs now and the job needs 2" in caplog.text


def test_precision_defaults_to_fp16_on_gpus_and_fp32_on_cpus(ray_cluster):
    assert plan_resources(1, 1.0, can_grow=True).precision == "fp16"
    assert plan_resources(1, 1.0, can_grow=True, precision="bf16").precision == "bf16"
    assert plan_resources(1, 1.0, can_grow=True, precision="fp32").precision == "fp32"
    assert plan_resources(1, None).precision == "fp32"
    assert plan_resources(1, None, precision="bf16").precision == "bf16"


def test_fp16_on_cpu_actors_is_refused_naming_what_runs(ray_cluster):
    with pytest.raises(ValueError, match=r"--precision fp16 needs a GPU.*use fp32 .* or bf16"):
        plan_resources(1, None, precision="fp16")
    with pytest.raises(ValueError, match=r"precision must be one of \['fp32', 'fp16', 'bf16'\]"):
        plan_resources(1, None, precision="fp8")


def test_a_submitted_job_can_grow(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not cluster_can_grow()
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    assert cluster_can_grow()


@pytest.mark.parametrize(
    ("workers", "gpus", "message"),
    [(0, None, "--workers must be at least 1"), (1, -1.0, "--gpus-per-worker must be >= 0")],
)
def test_bad_requests(ray_cluster, workers, gpus, message):
    with pytest.raises(ValueError, match=message):
        plan_resources(workers, gpus, can_grow=False)
