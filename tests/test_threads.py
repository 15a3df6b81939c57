"""Threads per rank (deepnet/distributed/threads.py): the ranks a launcher put on this
machine, each rank's share of the cores, the user's own settings, and what ``--nproc``
hands its ranks.  The runs with 2 MPI processes are in tests/test_distributed.py."""

from __future__ import annotations

import sys

import pytest

from deepnet import cli
from deepnet.cli import processes
from deepnet.distributed.threads import (SET_BY_DEEPNET, THREAD_VARIABLES, apply_threads, available_cores,
                                         environment_for_ranks, local_ranks, plan_threads)


@pytest.mark.parametrize("environ,expected", [
    ({"MPI_LOCALNRANKS": "3", "PMI_SIZE": "6"}, (3, "MPI_LOCALNRANKS")),                   # MPICH's Hydra
    ({"OMPI_COMM_WORLD_LOCAL_SIZE": "4", "OMPI_COMM_WORLD_SIZE": "8"}, (4, "OMPI_COMM_WORLD_LOCAL_SIZE")),
    ({"SLURM_PROCID": "5", "SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "3", "PMIX_SIZE": "7"},
     (1, "SLURM_STEP_TASKS_PER_NODE")),
    ({"SLURM_PROCID": "0", "SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "1"},
     (2, "SLURM_STEP_TASKS_PER_NODE")),
    ({"PMI_SIZE": "4"}, (4, "PMI_SIZE, the job's size")),        # no local count: all taken to be here
    ({}, (1, "one process")),
])
def test_the_ranks_on_this_machine_come_from_the_launcher(environ, expected):
    assert local_ranks(environ) == expected


@pytest.mark.parametrize("cores,ranks,share", [(2, 2, 1), (8, 3, 2), (2, 4, 1), (16, 1, 16)])
def test_each_rank_gets_its_share_of_the_cores(cores, ranks, share):
    plan = plan_threads(environ={"MPI_LOCALNRANKS": str(ranks)}, cores=cores)
    assert plan.threads == share and plan.ranks == ranks
    assert plan.environment() == dict.fromkeys(THREAD_VARIABLES, str(share))
    assert plan.describe() == (f"{share} per rank ({cores} cores / {ranks} rank{'s' if ranks > 1 else ''} on this "
                               "machine (MPI_LOCALNRANKS); --threads N to change)")


def test_the_users_settings_win_and_threads_wins_over_them():
    env = {"MPI_LOCALNRANKS": "2", "OMP_NUM_THREADS": "3", "NUMBA_NUM_THREADS": "1"}
    plan = plan_threads(environ=env, cores=8)
    assert plan.threads == 3 and plan.ranks is None
    assert plan.environment() == {"OPENBLAS_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}     # the user's stay
    assert plan.describe() == "3 per rank (OMP_NUM_THREADS=3 in the environment; NUMBA_NUM_THREADS=1 kept)"
    only_blas = plan_threads(environ={"MPI_LOCALNRANKS": "2", "OPENBLAS_NUM_THREADS": "2"}, cores=8)
    assert only_blas.threads == 4 and "OPENBLAS_NUM_THREADS" not in only_blas.environment()
    given = plan_threads(5, environ=env, cores=8)
    assert given.threads == 5 and given.describe() == "5 per rank (--threads 5)"
    assert given.environment() == dict.fromkeys(THREAD_VARIABLES, "5")


def test_the_variables_nproc_set_are_not_taken_for_the_users():
    handed = environment_for_ranks(plan_threads(ranks=2, environ={}, cores=2))
    assert handed == {**dict.fromkeys(THREAD_VARIABLES, "1"), SET_BY_DEEPNET: ",".join(THREAD_VARIABLES)}
    in_rank = plan_threads(environ={**handed, "MPI_LOCALNRANKS": "2"}, cores=2)
    assert in_rank.ranks == 2 and in_rank.source == "2 cores / 2 ranks on this machine (MPI_LOCALNRANKS)"


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_thread_count_is_refused_in_one_line(value):
    with pytest.raises(ValueError, match=rf"OMP_NUM_THREADS: expected a positive whole number of threads, "
                                         rf"got '{value}'"):
        plan_threads(environ={"OMP_NUM_THREADS": value})


def test_threads_out_of_range_is_refused_before_anything_runs(tmp_path, capsys):
    assert cli.main(["train", "--threads", "0", "--out", str(tmp_path / "r")]) == 1
    assert "--threads: expected a positive number of threads per process, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _clear_thread_variables(monkeypatch):
    for var in (*THREAD_VARIABLES, SET_BY_DEEPNET, "MPI_LOCALNRANKS", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.setenv(var, "")          # recorded: what apply_threads sets is undone after the test
        monkeypatch.delenv(var)


@pytest.mark.parametrize("extra,env,expected", [
    ([], {}, None),                                  # None: the share, cores // 2
    (["--threads", "3"], {}, "3"),
    ([], {"OMP_NUM_THREADS": "2"}, "2"),
])
def test_nproc_hands_its_ranks_their_threads_before_they_start(monkeypatch, extra, env, expected):
    """What ``deepnet train --nproc 2`` starts mpiexec with (mpiexec itself is not run)."""
    _clear_thread_variables(monkeypatch)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    started = {}

    class Started:
        def __init__(self, cmd, env=None, **kwargs):
            started.update(cmd=cmd, env=env)

        def wait(self):
            return 0

    monkeypatch.setattr(processes.subprocess, "Popen", Started)
    monkeypatch.setattr(processes, "mpiexec_command", lambda n, argv: ["mpiexec", "-n", str(n), *argv])
    assert cli.main(["train", "--nproc", "2", "--epochs", "1", *extra]) == 0
    share = expected or str(max(1, available_cores() // 2))
    assert {var: started["env"][var] for var in THREAD_VARIABLES} == dict.fromkeys(THREAD_VARIABLES, share)
    assert started["cmd"][3:] == ["train", "--epochs", "1", *extra]


def test_apply_threads_says_what_it_could_not_size(monkeypatch):
    """Without threadpoolctl, NumPy's BLAS (loaded already) keeps its threads: said, not hidden."""
    _clear_thread_variables(monkeypatch)
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")      # the user's: numba is left alone by this test
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    missed = apply_threads(plan_threads(ranks=available_cores() * 2, cores=available_cores()))
    if available_cores() == 1:
        assert missed == []
    else:
        assert missed == [f"NumPy's BLAS, loaded already, keeps its {available_cores()} threads (pip install "
                          "threadpoolctl, or set OMP_NUM_THREADS before starting)"]


def test_mpis_count_of_the_ranks_here_replaces_the_launchers(monkeypatch):
    """The rank sizes its pools from the launcher's variables, then again from MPI's count
    when it differs; what the first sizing set is not taken for the user's setting."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    _clear_thread_variables(monkeypatch)
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setenv("MPI_LOCALNRANKS", "4")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")      # the user's: numba is left alone by this test
    args = cli.build_parser().parse_args(["train"])
    cores = available_cores()
    with threadpoolctl.threadpool_limits(limits=None):          # this process's BLAS as it was, afterwards
        first = processes.limit_threads(args)
        again = processes.limit_threads(args, first, 2)
    assert first.source == f"{cores} core{'s' if cores > 1 else ''} / 4 ranks on this machine (MPI_LOCALNRANKS)"
    assert again.source == f"{cores} core{'s' if cores > 1 else ''} / 2 ranks on this machine (MPI's count)"
    assert again.threads == max(1, cores // 2) and again.kept == {"NUMBA_NUM_THREADS": "1"}
    assert processes.limit_threads(args, again, 2) is again


def test_info_says_the_threads_of_a_rank(monkeypatch, capsys):
    _clear_thread_variables(monkeypatch)
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"threads: {available_cores()} core" in out
    assert (f"a data-parallel rank gets max(1, cores // ranks on this machine): --nproc 2 gives "
            f"{max(1, available_cores() // 2)} per rank; override: --threads N or OMP_NUM_THREADS") in out
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cli.main(["info"]) == 0
    assert "every process, data-parallel ranks included: 1 per process (OMP_NUM_THREADS=1 in the environment)" \
        in capsys.readouterr().out
