"""pipeline.resources: actors and GPUs from the running Ray (the tests' has 2 CPUs, no GPU)."""

import logging

import pytest
import ray

from pipeline.resources import Resources, cluster_can_grow, plan_resources


def test_cpu_defaults_one_actor_per_core_up_to_four(ray_cluster, monkeypatch):
    assert plan_resources(None, None) == Resources(2, 0.0, 1)
    assert plan_resources(1, None) == Resources(1, 0.0, 2)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0})
    assert plan_resources(None, None) == Resources(4, 0.0, 4)


def test_a_default_plan_starts_no_more_actors_than_batches(ray_cluster):
    assert plan_resources(None, None, batches=1) == Resources(1, 0.0, 2)
    assert plan_resources(None, None, batches=5) == Resources(2, 0.0, 1)
    assert plan_resources(None, None, batches=0) == Resources(1, 0.0, 2)
    assert plan_resources(2, None, batches=1) == Resources(2, 0.0, 1)  # asked for: kept


def test_gpus_beyond_a_local_ray_are_refused(ray_cluster):
    with pytest.raises(ValueError, match=r"needs 2 GPUs but this local Ray has 0.*RAY_ADDRESS"):
        plan_resources(2, 1.0, can_grow=False)


def test_gpus_beyond_an_autoscaling_cluster_wait_for_it(ray_cluster, caplog, monkeypatch):
    """cluster.yaml's cluster has no GPU node at submit time: the job asks and waits."""
    monkeypatch.setattr(logging.getLogger("tadm"), "propagate", True)  # jobs turn it off
    with caplog.at_level(logging.WARNING, logger="tadm"):
        assert plan_resources(None, 1.0, can_grow=True) == Resources(1, 1.0, None)
        assert plan_resources(4, 0.5, can_grow=True) == Resources(4, 0.5, None)
    assert "has 0 GPUs now and the job needs 2" in caplog.text


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
