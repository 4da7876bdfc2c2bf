"""Runs stages in dependency order, skipping those whose stamp is current.

A stamp is written only after all of a stage's outputs are in place. It holds the stage's key
and the content digest of its outputs (see ``pipeline.stamps``), so a stage that reruns and
writes the same bytes leaves everything downstream done. Before any stage runs, the workflow is
checked as far as it can be without the heavy work (``pipeline.preflight``): a mistake is
refused with one line while the run folder stays exactly as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline import __version__
from pipeline.atomic import read_json, remove, write_json
from pipeline.catalog import MODEL_FILE
from pipeline.config import Workflow
from pipeline.errors import StageFailure, UserError, describe_os_error, system_refusal
from pipeline.layout import RunLayout
from pipeline.locks import LockHeld, file_lock
from pipeline.stages import Stage, get_stage, list_stages
from pipeline.stages.context import StageContext
from pipeline.stamps import (
    config_values,
    content_digest,
    external_digest,
    is_legacy,
    stage_key,
)


@dataclass(frozen=True)
class StageStatus:
    """One row of ``pipeline status``."""

    name: str
    state: str  # "done", "stale", "missing" or "off"
    finished: str | None
    seconds: float | None
    compute: str | None = None  # the device and arithmetic it ran with (Compute.describe)


class Runner:
    """Plans and runs the stages of one workflow."""

    def __init__(self, workflow: Workflow, layout: RunLayout, client: Any = None) -> None:
        self.workflow = workflow
        self.layout = layout
        self.client = client
        self.stages = [stage for stage in list_stages() if stage.enabled(workflow)]
        self._names = [stage.name for stage in self.stages]
        self._stamps: dict[str, dict | None] = {}  # read once
        self._digests: dict[tuple[str, str], str | None] = {}
        self._listed: dict = {}  # the files each manifest lists (stamps.listed_files_digest)

    # -- state -----------------------------------------------------------------------------

    def _inputs(self, stage: Stage) -> list[str]:
        return [name for name in stage.inputs if name in self._names]

    def _key(self, stage: Stage) -> str | None:
        """The stage's key now, or None while an input has no current stamp."""
        digests = {}
        for name in self._inputs(stage):
            stamp = self._stamp(name)
            if stamp is None or "digest" not in stamp:
                return None
            digests[name] = stamp["digest"]
        return stage_key(config_values(self.workflow, stage.config), digests, stage.revision,
                         self._external(stage))

    def _external(self, stage: Stage) -> dict[str, str | None]:
        """Digests of what the stage reads from outside the run folder (see ``pipeline.stamps``).
        A folder that is not there now (an unmounted disk) keeps the digest the stamp recorded:
        finished work is not stale because the data is away."""
        external: dict[str, str | None] = {}
        # the user's model file only when the workflow names one, so that runs without one
        # keep their keys
        wanted = [item.name for item in stage.external
                  if item is not MODEL_FILE or self.workflow.model.factory]
        recorded = (self._stamps.get(stage.name) or {}).get("external", {})
        for what in wanted:
            key = (what, stage.name if what == "images" else "")
            # the images a manifest lists are kept per version of the manifest: prepare's
            # writing a new one is seen at once
            if key not in self._digests or what == "images":
                self._digests[key] = external_digest(what, stage.name, self.workflow,
                                                     self.layout, self._listed)
            digest = self._digests[key]
            external[what] = recorded.get(what) if digest is None else digest
        return external

    def _stamp(self, name: str) -> dict | None:
        """The stage's stamp (read once per run)."""
        if name not in self._stamps:
            self._stamps[name] = read_json(self.layout.stamp(name))
        return self._stamps[name]

    def outdated_stamps(self) -> list[str]:
        """The stages whose stamp release 0.3.0 wrote (keyed by tokens): they are stale, and
        ``run`` and ``status`` say so once."""
        return [name for name in self._names if is_legacy(self._stamp(name))]

    def _digest(self, stage: Stage) -> tuple[str, list[str]]:
        return content_digest(stage.output_paths(self.workflow, self.layout), self.layout.base)

    def state(self, name: str) -> str:
        """``done`` (stamp current, inputs done, outputs there), ``stale`` (stamp out of date),
        ``missing`` (never finished, or an output was deleted since)."""
        stage = get_stage(name)
        if name not in self._names:
            return "off"
        stamp = self._stamp(name)
        if stamp is None:
            return "missing"
        if "digest" not in stamp:
            return "stale"
        if any(not (self.layout.base / output).exists() for output in stamp.get("outputs", ())):
            return "missing"
        inputs_done = all(self.state(upstream) == "done" for upstream in self._inputs(stage))
        return "done" if inputs_done and stamp.get("key") == self._key(stage) else "stale"

    def status(self) -> list[StageStatus]:
        """The state of every registered stage, with when it finished and how long it took."""
        rows = []
        for stage in list_stages():
            stamp = self._stamp(stage.name) or {}
            rows.append(StageStatus(stage.name, self.state(stage.name),
                                    stamp.get("finished"), stamp.get("seconds"),
                                    _described(stamp.get("compute"))))
        return rows

    # -- running ---------------------------------------------------------------------------

    def plan(self, target: str, force: bool = False) -> list[str]:
        """The stages ``run target`` executes: ``all`` = every stage not done (every stage with
        ``force``); a single stage = its upstream stages that are not done, then the stage itself
        (always: ``force`` never reruns finished upstream work)."""
        if target == "all":
            return [name for name in self._names if force or self.state(name) != "done"]
        if target not in self._names:
            valid = ", ".join(["all", *self._names])
            why = " (off in this workflow)" if target in {s.name for s in list_stages()} else ""
            raise UserError(f"unknown stage '{target}'{why}; choose one of: {valid}")
        upstream = self._upstream(target)
        return [name for name in self._names
                if name in upstream and self.state(name) != "done"] + [target]

    def _upstream(self, name: str) -> set[str]:
        found: set[str] = set()
        for upstream in self._inputs(get_stage(name)):
            found |= {upstream} | self._upstream(upstream)
        return found

    def run(self, target: str = "all", force: bool = False,
            shard: tuple[int, int] | None = None) -> list[str]:
        """Check the workflow, then run ``target`` under the workflow's lock; return the names
        of the stages that ran.

        With ``shard=(i, n)`` only the activations stage runs, filling its i-th share of the
        chunks; shard processes hold the lock shared, so they run side by side while an ordinary
        run is refused, and the shard that completes the store commits and stamps it.
        """
        from pipeline.preflight import check_run

        if shard is not None:
            self._check_shard(target, shard)
        check_run(self.workflow, self.layout,
                  [target] if shard is not None else self.plan(target, force),
                  on_cluster=self.client is not None)
        self.layout.run_dir.mkdir(parents=True, exist_ok=True)
        if shard is not None:
            return self._run_shard(target, shard)
        with self._lock():
            self._stamps.clear()  # another run may have finished while we checked
            self._digests.clear()
            self._listed.clear()
            self.say_outdated()
            plan = self.plan(target, force)
            self._log(f"run {target}{' --force' if force else ''}: {plan or 'nothing to do'}")
            ran = []
            for name in self._names:
                # A planned stage whose inputs reran but wrote the same bytes is done again.
                if name in plan and (force or name == target or self.state(name) != "done"):
                    self._run_stage(get_stage(name))
                    ran.append(name)
                elif target == "all" or name in self._upstream(target):
                    print(f"[{name}] up to date")
            stale = [name for name in self._names if self.state(name) != "done"]
            if stale:
                print(f"now stale: {', '.join(stale)} (`run all` updates them)")
            return ran

    def say_outdated(self) -> None:
        """One line when stamps of release 0.3.0 are found: their stages run again."""
        outdated = self.outdated_stamps()
        if outdated:
            print(f"{self.layout.stamps}: stamps of release 0.3.0 ({', '.join(outdated)}) are "
                  "no longer read; `run all` runs those stages again")

    def _check_shard(self, target: str, shard: tuple[int, int]) -> None:
        """A shard splits a stage that writes a sharded artifact (activations), whose inputs
        must be done."""
        sharded = [stage.name for stage in self.stages if stage.sharded]
        if target not in sharded:
            names = " or ".join(f"`run {name} --shard {shard[0]}/{shard[1]}`" for name in sharded)
            raise UserError(f"--shard splits the {' and '.join(sharded)} stage only; run "
                            f"{names}, not `run {target}`")
        waiting = [name for name in self._names
                   if name in self._upstream(target) and self.state(name) != "done"]
        if waiting:
            raise UserError(f"{', '.join(waiting)} must be done before shards run; run "
                            f"`python -m pipeline run {waiting[-1]} -w {self.workflow.source}`"
                            " once first")

    def _run_shard(self, target: str, shard: tuple[int, int]) -> list[str]:
        with self._lock(shared=True):
            self._stamps.clear()  # another process may have run a stage meanwhile
            self._check_shard(target, shard)
            self._run_stage(get_stage(target), shard)
        return [target]

    def _run_stage(self, stage: Stage, shard: tuple[int, int] | None = None) -> None:
        key = self._key(stage)
        assert key is not None, f"inputs of {stage.name} must be done before it runs"
        print(f"[{stage.name}] running: {stage.doc}")
        self._log(f"{stage.name}: start")
        started = dt.datetime.now(dt.UTC)
        clock = time.perf_counter()
        context = StageContext(self.workflow, self.layout, stage, key, self.client, shard)
        try:
            if stage.func(context) is False:  # a shard whose siblings still have chunks to do
                self._log(f"{stage.name}: shard {shard} done, stage incomplete")
                return
            with self._commit_lock():
                if not context.staged_outputs_exist():
                    print(f"[{stage.name}] another shard already completed the stage")
                    return
                # The stamp goes first so that a kill while outputs move is never taken for done.
                remove(self.layout.stamp(stage.name))
                self._stamps.pop(stage.name, None)
                context.commit()
            digest, outputs = self._digest(stage)
            seconds = time.perf_counter() - clock
            stamp = {
                "stage": stage.name, "key": key, "digest": digest, "outputs": outputs,
                "external": self._external(stage),
                "revision": stage.revision, "started": started.isoformat(timespec="seconds"),
                "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seconds": round(seconds, 2), "version": __version__,
            }
            if context.compute is not None:  # what it computed with, for status and the atlas
                stamp["compute"] = context.compute.to_json()
            write_json(self.layout.stamp(stage.name), stamp)
        except BaseException as error:
            self._log(f"{stage.name}: failed ({type(error).__name__}: {error})")
            with contextlib.suppress(OSError):
                context.abandon()
            if _out_of_memory(error):
                raise UserError(_memory_message(stage.name, self.workflow, context, error)
                                ) from None
            # A user's mistake stays one (exit 2), even when an OS error is behind it.
            refusal = None if isinstance(error, UserError | KeyboardInterrupt) \
                else system_refusal(error)
            if refusal is None:
                raise
            path, cause = describe_os_error(refusal, context.current_output)
            raise StageFailure(
                f"[{stage.name}] failed: {path}: {cause}; finished stages are kept and nothing "
                f"was stamped: fix that, then run the same command again") from None
        self._stamps[stage.name] = stamp
        self._log(f"{stage.name}: done in {seconds:.1f} s")
        print(f"[{stage.name}] done in {seconds:.1f} s")

    @contextlib.contextmanager
    def _commit_lock(self) -> Iterator[None]:
        """Serialise moving outputs into place (two shards may finish at the same moment)."""
        with file_lock(self.layout.run_dir / ".commit-lock"):
            yield

    @contextlib.contextmanager
    def _lock(self, shared: bool = False) -> Iterator[None]:
        """Hold a lock on the run folder so a second ``run`` refuses instead of racing.

        A killed run never leaves a stale lock behind (see :mod:`pipeline.locks`). Shards hold
        it shared: they may run together, but not beside an ordinary run.
        """
        since = dt.datetime.now().isoformat(timespec="seconds")
        with contextlib.ExitStack() as held:
            try:  # only taking the lock is refused: errors of the block itself pass through
                held.enter_context(file_lock(self.layout.lock, shared=shared, wait=False,
                                             holder=None if shared else
                                             f"pid {os.getpid()} since {since}"))
            except LockHeld as other:
                raise UserError(
                    f"{self.layout.run_dir}: workflow '{self.workflow.name}' is already running "
                    f"({other.holder or 'another process'}); wait for it to finish or stop it, "
                    "then run again") from None
            yield

    def _log(self, message: str) -> None:
        """Append to the run's log; best effort: a full disk must not hide the real error."""
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        try:
            with open(self.layout.log, "a", encoding="utf-8") as log:
                log.write(f"{stamp} {message}\n")
        except OSError:
            pass


def _described(compute: Any) -> str | None:
    """A stamp's ``compute`` record as ``status`` shows it (None: the stage recorded none)."""
    from pipeline.device import Compute

    return Compute.from_json(compute).describe() if isinstance(compute, dict) else None


#: Stages that compute in batches another section sizes: rank re-checks a bfloat16 store with
#: the activations stage's model, device and batch size.
_BATCHED_BY = {"rank": "activations"}


def _out_of_memory(error: BaseException) -> bool:
    """Whether a stage failed for lack of device (or CPU allocator) memory."""
    if "torch" not in sys.modules:  # a stage that never imported torch ran out of nothing
        return False
    from pipeline.device import out_of_memory

    return out_of_memory(error)


def _memory_message(name: str, workflow: Workflow, context: StageContext,
                    error: BaseException) -> str:
    """One line for a stage that ran out of memory: where, and the option that lowers it."""
    owner = _BATCHED_BY.get(name, name)  # the section whose batches the stage runs
    size = getattr(getattr(workflow, owner, None), "batch_size", None)
    where = context.compute.device if context.compute is not None else "the device"
    lower = (f"lower [{owner}] batch_size (now {size})" if size is not None
             else f"free memory on {where}, or run the stage on another device")
    cause = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    return (f"[{name}] ran out of memory on {where}"
            + (f" ({cause})" if cause else "")
            + f": {lower} and run the same command again (what is finished is kept)")
