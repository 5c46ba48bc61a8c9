"""llmdiet study --executor local|slurm (issue 32): the study's jobs through submitit, with the same results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from llmdiet import cli
from llmdiet.study import executor
from llmdiet.study.config import load_study_config
from llmdiet.study.plan import build_plan
from llmdiet.study.state import marker_path, read_marker

ROOT = Path(__file__).resolve().parents[1]


def small_config(demo_assets, study_dir: Path, **changes) -> dict:
    """One student, its and the teacher's int8 quantization, their evals and the speed job: every kind of
    dependency (train -> quantize -> eval; speed after everything it times)."""
    config = {
        "study_dir": str(study_dir),
        "teacher": str(demo_assets.teacher),
        "student": str(demo_assets.student),
        "seed": 0,
        "alphas": [0.5],
        "distill": {
            "preset": "demo",
            "max_steps": 4,
            "eval_strategy": "no",
            "save_strategy": "steps",
            "save_steps": 2,
            "load_best_model_at_end": False,
            "predict_with_generate": False,
            "logging_steps": 2,
            "disable_tqdm": True,
        },
        "quantize": {"methods": ["dynamic-int8"], "students": ["alpha-0.5"], "calibration_count": 8},
        "bit_sweep": {"bits": [], "models": []},
        "eval": {
            "in_domain": ["demo-en-fr"],
            "out_of_domain": [],
            "limit": 16,
            "batch_size": 8,
            "max_new_tokens": 16,
            "latency_sentences": 2,
            "speed_sentences": 4,
            "dev": "demo-en-fr-dev",
        },
        "statistics": {"n_bootstrap": 200},
        "verdict": {"n_resamples": 2000},
    }
    config.update(changes)
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def fake_scheduler():
    """An AutoExecutor stand-in that records what would be submitted (no Slurm here)."""
    log: list[dict] = []

    class FakeExecutor:
        def __init__(self, folder, cluster):
            self.folder, self.cluster, self.parameters = folder, cluster, {}

        def update_parameters(self, **parameters):
            self.parameters.update(parameters)

        def submit(self, function, *args):
            job_id = str(5000 + len(log))
            log.append({"folder": self.folder, "parameters": self.parameters, "function": function, "args": args})
            log[-1]["job_id"] = job_id
            return SimpleNamespace(job_id=job_id)

    return FakeExecutor, log


def test_slurm_submission_maps_every_dependency_and_queues_nothing_twice(demo_assets, tmp_path, monkeypatch):
    cluster = {
        "slurm": {"partition": "gpu", "account": "mt"},
        "resources": {"default": {"mem_gb": 16}, "train": {"gpus_per_node": 2, "processes": 2}},
    }
    config = write_config(tmp_path / "s.yaml", small_config(demo_assets, tmp_path / "run", cluster=cluster))
    plan = build_plan(load_study_config(config))
    factory, log = fake_scheduler()
    assert executor.submit_to_slurm(plan, executor.Submitter(plan, "slurm", factory)) == 0
    by_name = {entry["parameters"]["name"].removeprefix("llmdiet-"): entry for entry in log}
    assert list(by_name) == [*plan.jobs, "report"]  # every job, in dependency order, then the report
    ids = {name: entry["job_id"] for name, entry in by_name.items()}
    for name, job in plan.jobs.items():
        parameters = by_name[name]["parameters"]
        assert parameters["slurm_partition"] == "gpu" and parameters["slurm_account"] == "mt"
        assert parameters["mem_gb"] == 16
        extra = parameters.get("slurm_additional_parameters", {})
        assert extra.get("dependency") == ("afterok:" + ":".join(ids[d] for d in job.deps) if job.deps else None)
        assert Path(by_name[name]["folder"]) == tmp_path / "run" / "logs" / name.replace("/", "__")
    train = by_name["train/alpha-0.5"]
    assert train["parameters"]["gpus_per_node"] == 2
    assert train["function"].command[:6] == ["accelerate", "launch", "--num_processes", "2", "-m", "llmdiet"]
    assert train["function"].command[-2:] == ["--job", "train/alpha-0.5"]
    evaluation = by_name["eval/alpha-0.5+dynamic-int8"]
    assert evaluation["function"].command[:4] == [sys.executable, "-m", "llmdiet", "study"]
    assert evaluation["function"].command[-2:] == ["--job", "eval/alpha-0.5+dynamic-int8"]
    assert evaluation["parameters"]["gpus_per_node"] == 0
    assert by_name["eval/alpha-0.5+dynamic-int8"]["parameters"]["slurm_additional_parameters"]["dependency"] == (
        f"afterok:{ids['quantize/alpha-0.5+dynamic-int8']}"
    )
    report = by_name["report"]["parameters"]
    assert report["slurm_additional_parameters"]["dependency"] == "afterok:" + ":".join(ids[n] for n in plan.jobs)
    assert by_name["report"]["function"].command[-1] == "--report"
    recorded = json.loads((tmp_path / "run" / "logs" / "submitted.json").read_text())
    assert recorded["jobs"] == {n: ids[n] for n in plan.jobs}

    # submitted again while Slurm still holds the jobs: none is queued twice, the new report waits for them
    monkeypatch.setattr(executor, "slurm_state", lambda folder, job_id: "PENDING")
    factory, again = fake_scheduler()
    executor.submit_to_slurm(plan, executor.Submitter(plan, "slurm", factory))
    assert [entry["parameters"]["name"] for entry in again] == ["llmdiet-report"]
    dependency = again[0]["parameters"]["slurm_additional_parameters"]["dependency"]
    assert dependency == "afterok:" + ":".join(ids[n] for n in plan.jobs)
    # ... and once Slurm says they failed, they are submitted again
    monkeypatch.setattr(executor, "slurm_state", lambda folder, job_id: "FAILED")
    factory, third = fake_scheduler()
    executor.submit_to_slurm(plan, executor.Submitter(plan, "slurm", factory))
    assert len(third) == len(plan.jobs) + 1


def test_local_scheduler_keeps_dependencies_parallelism_and_stops_after_a_failure(
    demo_assets, tmp_path, capsys, monkeypatch
):
    """The local scheduler without real jobs: each simulated job "finishes" (done marker) on its second poll,
    except the failing one. A job starts only when what it needs is done, at most cluster.parallel run at once,
    the speed job runs alone, and a failed job's dependents are not started (exit 1, one line each)."""
    from llmdiet.study.state import write_marker

    config = small_config(demo_assets, tmp_path / "run", cluster={"parallel": 2})
    plan = build_plan(load_study_config(write_config(tmp_path / "s.yaml", config)))
    failing = {"quantize/alpha-0.5+dynamic-int8"}
    running: set[str] = set()
    events: list[tuple[str, str, frozenset]] = []

    class Job:
        def __init__(self, name):
            self.name, self.polls, self.job_id = name, 0, name
            self.paths = SimpleNamespace(stderr=tmp_path / f"{name.replace('/', '__')}.err")

        def done(self):
            self.polls += 1
            if self.polls < 2:
                return False
            running.discard(self.name)
            if self.name not in failing:
                write_marker(plan, self.name, "done", time.time(), {"outputs": {}})
            return True

    class Submitter:
        def submit(self, name, kind, after):
            assert after == [] and all(
                (read_marker(plan, d) or {}).get("status") == "done" for d in plan.jobs[name].deps
            )
            running.add(name)
            events.append((name, kind, frozenset(running)))
            return Job(name)

    assert executor.run_locally(plan, Submitter(), poll_s=0) == 1
    started = [name for name, _, _ in events]
    assert max(len(alongside) for _, _, alongside in events) == 2  # parallel: 2, and it was used
    blocked = {"eval/alpha-0.5+dynamic-int8", "speed"}  # they need the failing job
    assert set(started) == set(plan.jobs) - blocked
    err = capsys.readouterr().err
    assert "quantize/alpha-0.5+dynamic-int8: did not finish (log: " in err
    assert all(f"{name}: not run: a job it needs failed" in err for name in blocked)
    assert not (tmp_path / "run" / "STUDY.md").exists()

    # the same command again: only what is not done starts, the speed job alone, then the report
    failing.clear()
    events.clear()
    import llmdiet.study.markdown
    import llmdiet.study.report

    monkeypatch.setattr(llmdiet.study.report, "write_report", lambda plan: tmp_path / "run" / "STUDY.md")
    monkeypatch.setattr(llmdiet.study.report, "collect", lambda plan: {})
    monkeypatch.setattr(llmdiet.study.markdown, "answer", lambda results: ["(answer)"])
    assert executor.run_locally(plan, Submitter(), poll_s=0) == 0
    assert [name for name, _, _ in events] == ["quantize/alpha-0.5+dynamic-int8", *sorted(blocked - {"speed"}), "speed"]
    assert [alongside for name, _, alongside in events if name == "speed"] == [{"speed"}]


@pytest.mark.parametrize(
    "cluster, message",
    [
        ({"resources": {"train": {"gpus": 1}}}, "cluster: resources.train.gpus: unknown (known: timeout_min"),
        ({"resources": {"evals": {}}}, "cluster: resources.evals: not a job kind"),
        ({"resources": {"eval": {"processes": 2}}}, "cluster: resources.eval.processes: only training jobs"),
        ({"resources": {"eval": {"timeout_min": 0}}}, "cluster: resources.eval.timeout_min: expected an integer >= 1"),
        ({"slurm": {"partiton": "gpu"}}, "cluster: slurm: unknown submitit Slurm parameter(s) ['partiton']"),
        ({"parallel": 0}, "cluster: parallel: expected an integer >= 1"),
    ],
)
def test_bad_cluster_section_is_one_line(demo_assets, tmp_path, capsys, cluster, message):
    config = write_config(tmp_path / "bad.yaml", small_config(demo_assets, tmp_path / "run", cluster=cluster))
    assert cli.main(["study", "--config", str(config), "--list"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{config}: {message}" in err, err


def test_executor_runs_the_whole_study_only(demo_assets, tmp_path, capsys):
    config = write_config(tmp_path / "s.yaml", small_config(demo_assets, tmp_path / "run"))
    assert cli.main(["study", "--config", str(config), "--executor", "local", "--job", "speed"]) == 2
    assert "--executor runs the whole study" in capsys.readouterr().err
    assert cli.main(["study", "--config", str(config), "--executor", "pbs"]) == 2
    assert "invalid choice: 'pbs'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _quality(run: Path) -> dict:
    """What must be identical between two runs of one study: every eval's metrics and samples, the sizes, the
    statistics and the verdicts (timings differ from run to run)."""
    evals = {}
    for results in sorted((run / "eval").glob("*/results.json")):
        data = json.loads(results.read_text())
        samples = {s: (results.parent / s / "samples.jsonl").read_text() for s in data["sets"]}
        metrics = {s: entry["metrics"] for s, entry in data["sets"].items()}
        evals[results.parent.name] = {"metrics": metrics, "samples": samples, "size": data["size"]["parameters"]}
    study = json.loads((run / "study_results.json").read_text())
    return {"evals": evals, "decisions": study["decisions"], "fingerprints": study["fingerprints"]}


@pytest.mark.slow
def test_local_executor_gives_the_in_process_results_and_resumes_a_killed_job(demo_assets, tmp_path):
    """submitit's LocalExecutor, each job its own process: the same results as in process; a job killed mid-run
    is submitted again on the next llmdiet study --executor local, and no finished job is redone."""
    one = write_config(tmp_path / "one.yaml", small_config(demo_assets, tmp_path / "one"))
    assert cli.main(["study", "--config", str(one)]) == 0
    two = write_config(tmp_path / "two.yaml", small_config(demo_assets, tmp_path / "two"))
    plan = build_plan(load_study_config(two))
    command = [sys.executable, "-m", "llmdiet", "study", "--config", str(two), "--executor", "local"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    victim = "eval/alpha-0.5"
    # the scheduler and its jobs in one process group, killed together (as a lost node or kill -9 would) while the
    # victim job runs
    first = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 600
    while (read_marker(plan, victim) or {}).get("status") != "running":
        assert first.poll() is None and time.time() < deadline, "the study ended before the victim job started"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(0.5)
    done_before = {
        n: marker_path(plan, n).read_text() for n in plan.jobs if (read_marker(plan, n) or {}).get("status") == "done"
    }
    assert "train/alpha-0.5" in done_before and victim not in done_before
    second = subprocess.run(command, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    for name, marker in done_before.items():  # not redone: the marker it finished with is untouched
        assert marker_path(plan, name).read_text() == marker, name
    assert read_marker(plan, victim)["status"] == "done"
    assert len(list((tmp_path / "two" / "logs" / "eval__alpha-0.5").glob("*_submitted.pkl"))) == 2
    assert f"{victim}: started" in second.stderr and "train/alpha-0.5: started" not in second.stderr
    assert _quality(tmp_path / "one") == _quality(tmp_path / "two")
    assert (tmp_path / "two" / "STUDY.md").is_file()
