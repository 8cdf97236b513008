"""Data-parallel helpers and the torchrun paths of student training / teacher pretraining.

The multi-process path is exercised with world size 1 under gloo on the CPU (a real torchrun launch
in a subprocess, loopback only): DDP with one rank must not change the arithmetic, so its weights
must equal a plain single-process run bit for bit, and the checkpoint must be written by rank 0.
"""

import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from ust.train import distributed as ddp

REPO = Path(__file__).resolve().parents[1]

# Written into tmp_path: run under torchrun it trains in distributed mode; imported by the test it
# gives the single-process reference with exactly the same code and seeds.
WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from ust.train import distributed as ddp
    from ust.method.networks import patch_net
    from ust.method.students import StudentTeacher, fit_target_statistics, make_students
    from ust.train.students import StudentTrainingConfig, train_students

    CONFIG = StudentTrainingConfig(epochs=2, batch_size=2, lr=1e-3, seed=3)


    def students_run(out: Path, distributed=None):
        torch.manual_seed(123)
        teacher = patch_net(17, d=8)
        model = StudentTeacher(teacher, make_students(teacher, 2, seed=1))
        images = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(7))
        fit_target_statistics(model, images)
        history = train_students(
            model, images, CONFIG, checkpoint=out / "students.ckpt", progress=False,
            distributed=distributed, live_dir=out / "students_live",
        )
        return model.students.state_dict(), history


    def teacher_run(out: Path):
        from ust.method.teacher import TeacherConfig
        from ust.train.teacher import pretrain

        cfg = TeacherConfig(
            patch_size=17, d=16, device="cpu", iterations=2, batch_size=4, lambda_k=0,
            lambda_m=1, lambda_c=1, eval_triplets=0, log_every=1, checkpoint_every=1,
        )
        return pretrain(cfg, out / "t.pt", progress=False, live_dir=out / "teacher_live")


    if __name__ == "__main__":
        torch.set_num_threads(1)
        out = Path(sys.argv[1])
        wrapped = []  # what wrap_ddp returned: proves the DDP path ran
        wrap = ddp.wrap_ddp
        ddp.wrap_ddp = lambda *a, **k: wrapped.append(wrap(*a, **k)) or wrapped[-1]
        # The teacher sets the process group up itself (as under `torchrun -m ust.cli teacher`)
        # and tears it down again.
        summary = teacher_run(out)
        teacher_wrapped = [type(m).__name__ for m in wrapped]
        assert not ddp.is_initialized()
        info = ddp.init_from_env(backend="gloo")
        assert info.world_size == 1 and ddp.is_initialized(), info
        weights, history = students_run(out, distributed=info)
        if ddp.is_main():
            torch.save(
                {
                    "weights": weights,
                    "history": history,
                    "teacher_summary": summary,
                    "teacher_wrapped": teacher_wrapped,
                    "wrapped": [type(m).__name__ for m in wrapped],
                },
                out / "dist.pt",
            )
        ddp.cleanup()
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_worker(path: Path):
    spec = importlib.util.spec_from_file_location("ust_dist_worker", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def torchrun_world1(tmp_path_factory):
    """Run the worker once under ``torch.distributed.run`` (1 process, gloo, 127.0.0.1)."""
    root = tmp_path_factory.mktemp("dist")
    (root / "dist").mkdir()
    (root / "single").mkdir()
    script = root / "worker.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in (*ddp.TORCHRUN_ENV, "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}")
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only, whatever the host name resolves to
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(script),
        str(root / "dist"),
    ]
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, _load_worker(script)


def _assert_same_dvclive(root: Path, name: str) -> None:
    """Rank 0 of the DDP run wrote the dvclive files of the single-process run, byte for byte."""
    single, dist_dir = root / "single" / name, root / "dist" / name
    files = sorted(p.relative_to(single) for p in single.rglob("*") if p.is_file())
    assert Path("metrics.json") in files and len(files) > 1
    assert files == sorted(p.relative_to(dist_dir) for p in dist_dir.rglob("*") if p.is_file())
    for f in files:
        assert (dist_dir / f).read_text() == (single / f).read_text(), f


def test_shard_equal_pieces_cover_everything():
    for n, world in [(10, 3), (12, 4), (2, 5), (7, 1), (1, 2)]:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
        pieces = [ddp.shard(perm, r, world) for r in range(world)]
        per = -(-n // world)
        assert all(isinstance(p, torch.Tensor) and len(p) == per for p in pieces)
        union = torch.cat(pieces)
        assert set(union.tolist()) == set(range(n))  # every index is used
        # Overlap only from padding: exactly per·world − n repeats, none when world divides n.
        assert len(union) - len(set(union.tolist())) == per * world - n
        # The j-th items of all ranks form a contiguous window of the permutation (padded by
        # wrapping), so ranks step through the same global order.
        padded = torch.cat([perm] * (per * world // n + 1))[: per * world]
        assert torch.equal(torch.stack(pieces, 1).flatten(), padded)
    perm = torch.randperm(9)
    assert torch.equal(ddp.shard(perm, 0, 1), perm)
    assert ddp.shard(list(range(5)), 1, 2) == [1, 3, 0]  # padded by wrapping
    arr = ddp.shard(np.arange(5), 0, 2)
    assert isinstance(arr, np.ndarray) and arr.tolist() == [0, 2, 4]
    assert ddp.shard(torch.arange(0), 0, 2).numel() == 0
    with pytest.raises(ValueError, match="rank"):
        ddp.shard(perm, 2, 2)


def test_step_indices_interleave_ranks_and_match_single_process():
    b, w = 3, 2
    ranks = [ddp.StepIndices(1, 4, b, r, w) for r in range(w)]
    assert all(len(s) == 3 * b for s in ranks)
    # Global step s reads items s·B·W … (s+1)·B·W − 1, rank r the r-th block of B of them.
    for k, step in enumerate(range(1, 4)):
        together = [i for s in ranks for i in list(s)[k * b : (k + 1) * b]]
        assert together == list(range(step * b * w, (step + 1) * b * w))
    assert [ranks[1][i] for i in range(len(ranks[1]))] == list(ranks[1])
    assert ranks[0][-1] == list(ranks[0])[-1] and ranks[0][1:3] == list(ranks[0])[1:3]
    # One rank: exactly the single-process stream range(start·B, stop·B).
    assert list(ddp.StepIndices(2, 5, 4)) == list(range(8, 20))
    assert len(ddp.StepIndices(5, 5, 4)) == 0
    with pytest.raises(IndexError):
        ranks[0][len(ranks[0])]
    with pytest.raises(ValueError, match="rank"):
        ddp.StepIndices(0, 1, 2, rank=2, world=2)


def test_without_torchrun_everything_is_a_no_op(monkeypatch):
    for key in ddp.TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    info = ddp.init_from_env()
    assert (info.rank, info.world_size, info.local_rank) == (0, 1, 0)
    assert not info.distributed and info.is_main
    assert not dist.is_initialized() and ddp.is_main()
    net = nn.Linear(2, 2)
    assert ddp.wrap_ddp(net, info) is net
    with pytest.raises(RuntimeError, match="process group"):
        ddp.wrap_ddp(net, info, force=True)
    t = torch.tensor([1.5, -2.0])
    mean = ddp.all_reduce_mean(t)
    assert torch.equal(mean, t) and mean is not t
    assert ddp.all_reduce_mean(torch.tensor([3])).dtype == torch.float64
    ddp.barrier()
    ddp.cleanup()
    assert not dist.is_initialized()


def test_students_world1_ddp_matches_single_process(torchrun_world1):
    root, worker = torchrun_world1
    torch.manual_seed(0)  # the reference run must not depend on the caller's RNG either
    weights, history = worker.students_run(root / "single")
    dist_run = torch.load(root / "dist" / "dist.pt", weights_only=False)
    assert dist_run["wrapped"][-2:] == ["DistributedDataParallel"] * 2  # one DDP per student
    assert dist_run["weights"].keys() == weights.keys()  # DDP wrappers leave keys untouched
    for k, v in weights.items():
        assert torch.equal(dist_run["weights"][k], v), k
    assert dist_run["history"] == history and len(history) == 2 and len(history[0]) == 2
    # Rank 0 wrote the usual checkpoint, after the last epoch, in the single-process format.
    ckpt = torch.load(root / "dist" / "students.ckpt", weights_only=False)
    ref = torch.load(root / "single" / "students.ckpt", weights_only=False)
    assert ckpt.keys() == ref.keys() and ckpt["epoch"] == 2
    assert all(torch.equal(ckpt["students"][k], v) for k, v in weights.items())
    assert not list((root / "dist").glob("*.tmp"))
    _assert_same_dvclive(root, "students_live")


def test_teacher_world1_ddp_matches_single_process(torchrun_world1):
    root, worker = torchrun_world1
    summary = worker.teacher_run(root / "single")
    dist_run = torch.load(root / "dist" / "dist.pt", weights_only=False)
    # pretrain initialised the group from the torchrun environment and trained through DDP.
    assert dist_run["teacher_wrapped"] == ["DistributedDataParallel"]
    assert dist_run["teacher_summary"]["world_size"] == 1 and summary["world_size"] == 1
    a = torch.load(root / "dist" / "t.pt", weights_only=False)
    b = torch.load(root / "single" / "t.pt", weights_only=False)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in b["state_dict"].items():
        assert torch.equal(a["state_dict"][k], v), k
    # Same loss log (mean over the single rank), and rank 0 wrote checkpoint and CSV.
    assert (root / "dist" / "t_loss.csv").read_text() == (
        root / "single" / "t_loss.csv"
    ).read_text()
    ckpt = torch.load(root / "dist" / "t.ckpt", weights_only=False)
    assert ckpt["step"] == 2 and len(ckpt["log"]) == 2
    assert all(torch.equal(ckpt["model"][k], v) for k, v in b["state_dict"].items())
    assert not list((root / "dist").glob("*.tmp"))
    _assert_same_dvclive(root, "teacher_live")
