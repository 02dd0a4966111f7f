"""The whole graph on a full-size generated catalog, per stage: wall time and peak memory (not a test).

Runs the documented full-size command in a clone of this repository (committed code; the clone is
the ``--workdir``, outside the project, so the default run's outputs here are untouched), with the clone's
DVC cache hard-linked (``--cache-type``, DVC's setting for large data; the project's default copies):

    dvc exp run -S sample.n_train=84916 -S sample.n_test=13812 -S sample.image_size=500

and watches it from outside, every ``--interval`` seconds, through ``/proc`` (Linux): each DVC stage
runs ``python stages/<name>.py``; that process and its descendants (worker pools) are the stage.
Per stage: wall seconds (process start to exit), peak RSS of the stage's whole process tree (the
sum over its processes: shared pages count once per process, so an upper bound) and of its largest
process. The DVC overhead between stages (hashing outputs, checking the cache) is the whole run's
wall time minus the stages' sum; ``dvc_gaps_s`` splits it by stage. Writes
``reports/bench/full_scale.json`` (with the run's metrics, split balance, near-duplicate clusters and
detector scores against the planted defects, read from its reports) and prints the table
docs/benchmarks.md shows.

Then (unless ``--no-drop``) the label-noise policy's effect: a second experiment with
``-S label_audit.label_noise=drop`` (the flagged training rows left out; every model retrains) and
``rakuten compare`` of the two, per model and for the fusion, with paired-bootstrap intervals.

    python bench/full_scale.py                       # ~37 min + ~25 min for the drop run on 2 cores
    python bench/full_scale.py --set camembert.demo.max_train_rows=0   # extra -S overrides
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

FULL_SIZE = ("sample.n_train=84916", "sample.n_test=13812", "sample.image_size=500")
STAGE = re.compile(r"stages/(\w+)\.py")
HASH_TIMING = re.compile(r"images hashed in ([\d.]+) s .*?search ([\d.]+) s")
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]


def processes() -> dict[int, tuple[int, int, float, str]]:
    """``pid -> (parent pid, RSS bytes, start time in seconds since boot, command line)`` of every process."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            out[int(entry.name)] = (int(fields[1]), int(fields[21]) * PAGE, int(fields[19]) / TICKS, cmd)
        except (OSError, ValueError, IndexError):
            continue  # the process ended while being read
    return out


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


class Watcher(threading.Thread):
    """Samples the stage process trees below ``root_pid`` until :meth:`stop`."""

    def __init__(self, root_pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.interval = root_pid, interval
        self.stages: dict[str, dict] = {}
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def sample(self) -> None:
        table = processes()
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_rest) in table.items():
            children.setdefault(ppid, []).append(pid)

        def tree(pid: int) -> list[int]:
            out, todo = [], [pid]
            while todo:
                p = todo.pop()
                out.append(p)
                todo.extend(children.get(p, []))
            return out

        now = uptime()
        for pid in tree(self.root_pid):
            match = STAGE.search(table.get(pid, (0, 0, 0.0, ""))[3])
            if not match or STAGE.search(table.get(table[pid][0], (0, 0, 0.0, ""))[3]):
                continue  # not a stage, or a worker of one (counted in its parent's tree)
            members = [table[p] for p in tree(pid) if p in table]
            rec = self.stages.setdefault(
                match.group(1), {"start": table[pid][2], "peak_tree_rss": 0, "peak_process_rss": 0, "processes": 0}
            )
            rec["end"] = now
            rec["peak_tree_rss"] = max(rec["peak_tree_rss"], sum(m[1] for m in members))
            rec["peak_process_rss"] = max(rec["peak_process_rss"], max(m[1] for m in members))
            rec["processes"] = max(rec["processes"], len(members))


def clone(workdir: Path) -> None:
    """A fresh clone of this repository's committed HEAD (its own DVC cache)."""
    if workdir.exists():
        raise SystemExit(f"{workdir} exists; remove it or pass another --workdir")
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(workdir)], check=True)


def drop_run(workdir: Path, overrides: list[str], env: dict, log_path: Path) -> dict:
    """The same catalog with the flagged training rows dropped, compared with the keep run (paired)."""
    command = ["dvc", "exp", "run", "--name", "full-size-drop"]
    command += [a for o in [*overrides, "label_audit.label_noise=drop"] for a in ("-S", o)]
    start = time.perf_counter()
    with open(log_path, "a") as log:
        done = subprocess.run(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        raise SystemExit(f"`{' '.join(command)}` failed ({done.returncode}); see {log_path}")
    compare = subprocess.run(
        ["rakuten", "compare", "full-size", "full-size-drop", "--json"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = round(time.perf_counter() - start, 1)
    return {"command": " ".join(command), "wall_s": wall, "compare": json.loads(compare.stdout)}


def gaps(stages: dict[str, dict], started: float, ended: float) -> dict[str, float]:
    """Seconds DVC spent before the first stage, after each stage (hashing its outputs into the cache,
    checking the next stage's deps), in run order; the gaps of 1 s or more."""
    order = sorted(stages.items(), key=lambda kv: kv[1]["start"])
    marks = [("before " + order[0][0], started, order[0][1]["start"])] if order else []
    for (name, rec), nxt in zip(order, [*(r["start"] for _, r in order[1:]), ended]):
        marks.append(("after " + name, rec["end"], nxt))
    return {label: round(b - a, 1) for label, a, b in marks if b - a >= 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rakuten_full_scale"))
    parser.add_argument("--set", action="append", default=[], help="extra `dvc exp run -S` override")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--keep", action="store_true", help="keep the clone (default: removed at the end)")
    parser.add_argument("--no-drop", action="store_true", help="skip the label_audit.label_noise=drop run")
    parser.add_argument("--machine", default=f"{os.cpu_count()}-core {platform.machine()}")
    parser.add_argument("--out", type=Path, default=ROOT / "reports/bench/full_scale.json")
    parser.add_argument(
        "--cache-type",
        default="hardlink",
        choices=("copy", "hardlink", "symlink", "reflink"),
        help="the clone's `dvc config --local cache.type` (default hardlink: DVC's large-dataset setting; copy "
        "writes the 8 GB of generated and cleaned images a second time, into .dvc/cache)",
    )
    args = parser.parse_args()
    clone(args.workdir)
    subprocess.run(["dvc", "config", "--local", "cache.type", args.cache_type], cwd=args.workdir, check=True)
    overrides = [*FULL_SIZE, *args.set]
    command = ["dvc", "exp", "run", "--name", "full-size"] + [a for o in overrides for a in ("-S", o)]
    # this interpreter's environment, the clone's code (not an editable install's source tree)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(args.workdir.resolve() / "src"),
    }
    start, started = time.perf_counter(), uptime()
    log_path = args.workdir.parent / f"{args.workdir.name}.log"
    with open(log_path, "w") as log:
        run = subprocess.Popen(command, cwd=args.workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        watcher = Watcher(run.pid, args.interval)
        watcher.start()
        code = run.wait()
        watcher.stop()
    total = time.perf_counter() - start
    if code:
        raise SystemExit(f"`{' '.join(command)}` failed ({code}); see {log_path}")
    stages = {
        name: {
            "wall_s": round(rec["end"] - rec["start"] + args.interval / 2, 1),
            "peak_tree_rss_mib": round(rec["peak_tree_rss"] / 2**20, 1),
            "peak_process_rss_mib": round(rec["peak_process_rss"] / 2**20, 1),
            "processes": rec["processes"],
        }
        for name, rec in sorted(watcher.stages.items(), key=lambda kv: kv[1]["start"])
    }
    # imported only now: importing rakuten pins its numeric environment in this process, which the
    # watched run (the documented command, as typed in a shell) must not inherit
    from rakuten.core.io import read_json, write_json

    metrics = read_json(args.workdir / "reports/metrics.json")
    audit = read_json(args.workdir / "reports/label_audit.json")
    split = read_json(args.workdir / "reports/split.json")
    hashes = read_json(args.workdir / "reports/image_hash.json")
    quality = read_json(args.workdir / "reports/image_quality.json")
    timing = HASH_TIMING.search(log_path.read_text(errors="replace"))
    result = {
        "command": " ".join(command),
        "machine": args.machine,
        "total_wall_s": round(total, 1),
        "dvc_overhead_s": round(total - sum(s["wall_s"] for s in stages.values()), 1),
        "dvc_gaps_s": gaps(watcher.stages, started, started + total),
        "cache_type": args.cache_type,
        "stages": stages,
        "metrics": metrics,
        "label_audit": audit,
        "split_groups": split["duplicate_groups"],
        "image_hash": {
            k: hashes[k]
            for k in (
                "rows",
                "near_duplicate_clusters",
                "near_duplicate_rows",
                "largest_near_duplicate_cluster",
                "search",
            )
            if k in hashes
        },
        "image_hash_s": {"hashing": float(timing.group(1)), "search": float(timing.group(2))} if timing else None,
        "detection": {
            k: {m: round(v[m], 4) for m in ("precision", "recall")} | {"planted": v["planted"]}
            for k, v in quality.get("detection", {}).items()
        },
        "note": "peak_tree_rss_mib sums RSS over a stage's processes (shared pages counted per process: "
        "an upper bound); wall_s is +-interval/2",
    }
    write_json(result, args.out)
    if not args.no_drop:
        result["label_noise_drop"] = drop_run(args.workdir, overrides, env, log_path)
        write_json(result, args.out)
    print(f"{'stage':<14}{'wall s':>9}{'peak tree RSS MiB':>20}{'largest process MiB':>22}")
    for name, s in stages.items():
        print(f"{name:<14}{s['wall_s']:>9.1f}{s['peak_tree_rss_mib']:>20.1f}{s['peak_process_rss_mib']:>22.1f}")
    print(f"{'total':<14}{total:>9.1f}   (DVC between stages: {result['dvc_overhead_s']} s)")
    if not args.keep:
        shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
