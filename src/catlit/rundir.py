"""The run directory every entry point writes, written one way.

- `RunDir.claim()`: an exclusive lock on the directory for the life of the run (a second run into the
  same directory is refused in one line), then a check that it holds no other run (unless the run
  resumes from a checkpoint inside it). What a run that stopped before its first checkpoint left
  (config, logs; no results, model or checkpoint) is moved aside into `.stopped-<time>-<pid>/`, so a
  rerun into the same directory is not refused forever.
- The lock is `flock` on `.lock`, which the OS releases when the process dies. Where the filesystem
  does not support it (Lustre mounted without `flock`, some NFS; or `CATLIT_RUN_LOCK=file`), an
  exclusive lock file `.lock.owner` (host, pid, start time, SLURM job) stands in: one left by a dead
  process on this host is named and taken over, and a requeued SLURM job takes its own back.
- Every file is written atomically (`catlit.files`): a temporary file in
  the same directory, flushed to disk and renamed over the old one, so a reader (or a crash) sees the
  old complete file or the new one, never a part, and a failed write keeps the old file.
- `config.yaml` (the resolved config) first, `summary.md` (the printed results table), `metrics.json`
  last: a directory with `metrics.json` is a finished run (`is_finished`), which `report.py` and
  `method.heads_from` rely on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from catlit.files import remove_partials, write_json, write_text
from catlit.secrets import redact, write_hydra_files

LOCK = ".lock"
OWNER = ".lock.owner"  # the lock file where flock is not supported
KEEP = {".hydra", LOCK, OWNER}  # what Hydra (and the lock) put into a run directory before the run starts
FINISHED = "metrics.json"
STOPPED = ".stopped-"  # what a run that stopped before its first checkpoint left, kept aside
WORK = {FINISHED, "model", "selection.json", "summary.md", "predictions"}  # never set aside


def is_finished(folder: Path) -> bool:
    return (Path(folder) / FINISHED).is_file()


class RunDirBusy(FileExistsError):
    """Another catlit process holds this run directory."""


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_handle = None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @contextlib.contextmanager
    def claim(
        self, resume_from: str | None = None, what: str = "run", restart_unfinished: bool = False
    ) -> Iterator[RunDir]:
        """Lock the directory for the block, refusing one that another process holds or that holds a
        finished or partial run (unless `resume_from` is a checkpoint inside it; with
        `restart_unfinished`, what an unfinished run left is set aside, as a run without checkpoints
        cannot resume)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            removed = remove_partials(self.path)  # ours to clean: the lock keeps every other writer out
            if removed:
                print(f"run directory {self.path}: removed {len(removed)} partial file(s) that killed saves "
                      f"left ({', '.join(p.name for p in removed[:3])})", flush=True)  # fmt: skip
            self._check_free(resume_from, what, restart_unfinished)
            yield self
        finally:
            self._unlock()

    def _lock(self) -> None:
        import errno
        import fcntl

        if os.environ.get("CATLIT_RUN_LOCK", "flock") == "file":
            return self._lock_file()
        handle = open(self.path / LOCK, "a+")  # noqa: SIM115  (held for the life of the run)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise self._busy(holder) from None
        except OSError as err:  # the filesystem has no flock (ENOLCK, EOPNOTSUPP, ENOSYS)
            handle.close()
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            print(f"run directory {self.path}: flock is not supported here ({err.strerror}); "
                  f"locking with {OWNER} instead", flush=True)  # fmt: skip
            return self._lock_file()
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock_handle = handle

    def _busy(self, holder: str) -> RunDirBusy:
        return RunDirBusy(
            f"run directory {self.path} is in use by another catlit run ({holder}): wait for it, or "
            "choose another hydra.run.dir"
        )

    def _lock_file(self) -> None:
        """An exclusive lock file (created with O_EXCL, which every shared filesystem honours)."""
        import json
        import socket
        import time

        owner = self.path / OWNER
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "slurm_job": os.environ.get("SLURM_JOB_ID")}  # fmt: skip
        for _ in range(2):
            try:
                fd = os.open(owner, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    held = json.loads(owner.read_text())
                except (OSError, ValueError):
                    held = {}
                taken_over = self._stale(held, me)
                if not taken_over:
                    pid, host, since = (held.get(k, "?") for k in ("pid", "host", "since"))
                    holder = f"pid {pid} on {host} since {since}"
                    raise self._busy(holder) from None
                print(f"run directory {self.path}: {taken_over}; taking the lock over", flush=True)
                owner.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self._lock_handle = owner
            return
        raise self._busy(f"a lock file {owner} that keeps coming back")

    @staticmethod
    def _stale(held: dict, me: dict) -> str | None:
        """Why a lock file may be taken over (its process is gone), or None (it may be alive)."""
        if held.get("slurm_job") and held.get("slurm_job") == me["slurm_job"]:
            return f"the lock is this SLURM job's own ({held['slurm_job']}, requeued)"
        if held.get("host") == me["host"] and isinstance(held.get("pid"), int):
            try:
                os.kill(held["pid"], 0)
            except ProcessLookupError:
                return f"a stale lock of pid {held['pid']} (started {held.get('since', '?')}), which is dead"
            except PermissionError:
                return None  # alive, another user's
        return None

    def _unlock(self) -> None:
        if isinstance(self._lock_handle, Path):  # the lock file
            self._lock_handle.unlink(missing_ok=True)
        elif self._lock_handle is not None:
            self._lock_handle.close()  # closing the descriptor releases the lock
        self._lock_handle = None

    def _check_free(self, resume_from: str | None, what: str, restart_unfinished: bool = False) -> None:
        existing = sorted(
            p.name
            for p in self.path.iterdir()
            if p.name not in KEEP and p.suffix != ".log" and not p.name.startswith(STOPPED)
        )
        if not existing:
            return
        if resume_from and Path(resume_from).resolve().is_relative_to(self.path.resolve()):
            return  # resuming this very run
        if not self._holds_work(existing) or (restart_unfinished and FINISHED not in existing):
            self._set_aside(existing, what)
            return
        hint = (
            f", or resume it with ckpt_path={self.path}/checkpoints/last.ckpt"
            if (self.path / "checkpoints").is_dir()
            else ""
        )
        raise FileExistsError(
            f"run directory {self.path} already holds a {what} ({', '.join(existing[:5])}): choose another "
            f"hydra.run.dir{hint}"
        )

    def _holds_work(self, existing: list[str]) -> bool:
        """A finished or partly finished run (results, a saved model, a checkpoint to resume from)."""
        return bool(set(existing) & WORK) or any((self.path / "checkpoints").glob("*.ckpt"))

    def _set_aside(self, existing: list[str], what: str) -> None:
        """What a run that stopped before its first checkpoint (or, without checkpoints, before it
        finished) left: kept, under a hidden folder of this directory, and the directory is free again."""
        import time

        aside = self.path / f"{STOPPED}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        aside.mkdir()
        for name in existing:
            os.replace(self.path / name, aside / name)
        print(
            f"run directory {self.path} held a {what} that stopped unfinished: moved what "
            f"it left ({', '.join(existing[:5])}) to {aside.name}/",
            flush=True,
        )

    def write_config(self, cfg: DictConfig) -> None:
        """The resolved config (and Hydra's `.hydra/` copies), secret values redacted
        (`catlit.secrets`); called once the run owns the directory."""
        resolved = OmegaConf.to_container(cfg, resolve=True)
        write_text(self.path / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(redact(resolved))))
        write_hydra_files(self.path, cfg)

    def write_summary(self, text: str) -> None:
        """The printed results table, also kept as summary.md."""
        write_text(self.path / "summary.md", text.strip() + "\n")
        print(text, flush=True)

    def write_metrics(self, metrics: dict) -> None:
        """Written last: its presence marks the run finished."""
        write_json(self.path / FINISHED, metrics)
