"""The models a web process serves, loaded once and swapped when a version is promoted.

Each process keeps an immutable snapshot {kind: ServingState}; a request takes the
snapshot once, so a swap never changes a model under a request in flight. Every
MODEL_REFRESH_SECONDS the first request to notice asks the database which versions
should serve; a changed version is loaded (checksum verified) before it replaces the
old one, and a refused artifact is logged while the previous version keeps serving.
A process that serves already loads the new version in a background thread
(MODEL_LOAD_IN_BACKGROUND): loading takes seconds (a sentiment version's int8 encoder is
converted then), which the request that noticed it would otherwise wait; the next
refresh after the load serves it (an A/B candidate being replaced gives its share to the
active version meanwhile). A process's first load is waited for, so a process starting
never answers from the fallback while a trained version exists. A load that never
returns (a hung network mount) leaves the previous version serving: a thread cannot be
stopped, so once it has run MODEL_LOAD_TIMEOUT_SECONDS the process logs it once and
/readyz warns that this process serves an older version than the registry's, until it is
restarted.

The artifacts of loaded versions are watched too: one changed on disk after loading
(someone's copy, a bad restore, bit rot) is re-checksummed; on a mismatch the process keeps
the copy it verified and loaded, logs once, and /readyz reports it, because the next
process to start would refuse that artifact.
"""

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from recommender.artifacts import (
    ArtifactRefused,
    artifact_directory,
    directory_checksum,
    load_verified_model,
)
from recommender.models import ModelKind, ModelVersion

logger = logging.getLogger(__name__)

# A refused artifact is not re-read (and re-checksummed, which is slow for a large
# catalog) on every refresh; it is retried after this long, in case it was repaired.
REFUSED_RETRY_SECONDS = 60.0
_LOADING = threading.Lock()
# What loading an artifact that cannot be served raises (checksum, missing or bad files).
_UNSERVABLE = (ArtifactRefused, OSError, ValueError, KeyError)


@dataclass(frozen=True)
class LoadedVersion:
    version_id: int
    name: str
    model: Any
    kind: str = ""
    checksum: str = ""
    # (relative path, size, mtime) of each file as verified at load time: a cheap stat
    # on every refresh tells whether the full checksum must be computed again.
    files: tuple = ()


def _artifact_files(directory) -> tuple:
    try:
        return tuple(sorted((str(path.relative_to(directory)), stat.st_size, stat.st_mtime_ns)
                            for path in directory.rglob("*")
                            if path.is_file() and (stat := path.stat())))
    except OSError:
        return ("unreadable",)


@dataclass(frozen=True)
class ServingState:
    active: LoadedVersion | None = None
    candidate: LoadedVersion | None = None
    candidate_percent: int = 0
    # An active version exists in the registry but its artifact could not be loaded.
    load_failed: str = ""


def ab_bucket(*, kind: str, user_id: str) -> int:
    """A user's sticky bucket 0-99 for A/B splits (stable across processes and restarts)."""
    digest = hashlib.sha256(f"{kind}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100


@dataclass
class _BackgroundLoad:
    thread: threading.Thread
    kind: str
    name: str
    started_at: float
    # Logged as overdue (past MODEL_LOAD_TIMEOUT_SECONDS): once per load.
    reported: bool = False

    def overdue(self) -> str | None:
        """What to report once the load has run past MODEL_LOAD_TIMEOUT_SECONDS."""
        running = time.monotonic() - self.started_at
        if running < settings.MODEL_LOAD_TIMEOUT_SECONDS:
            return None
        return (f"{self.name}: loading, or waiting for another load to finish, has run for "
                f"{running:.0f} s, over MODEL_LOAD_TIMEOUT_SECONDS (a hung artifact store?); "
                "this process keeps serving the version it loaded before: restart it")


@dataclass
class _Registry:
    states: dict[str, ServingState] = field(default_factory=dict)
    checked_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (version pk, checksum) -> (when refused, why) for artifacts that failed to load.
    refused: dict[tuple[int, str], tuple[float, str]] = field(default_factory=dict)
    # version pk -> why, for loaded versions whose artifact changed on disk, and the file
    # signature each loaded artifact was last checksummed at (so a file is hashed again
    # only when it changes again).
    changed_on_disk: dict[int, str] = field(default_factory=dict)
    checked_files: dict[int, tuple] = field(default_factory=dict)
    # (version pk, checksum) -> the thread loading it in the background, and the versions
    # those threads loaded, which the next refresh serves. A reset starts a new
    # generation: what a thread of an older one loaded or refused is dropped.
    loaders: dict[tuple[int, str], _BackgroundLoad] = field(default_factory=dict)
    loaded_in_background: dict[tuple[int, str], LoadedVersion] = field(default_factory=dict)
    generation: int = 0

    def state(self, kind: str) -> ServingState:
        if time.monotonic() - self.checked_at >= settings.MODEL_REFRESH_SECONDS:
            self.refresh()
        return self.states.get(kind, ServingState())

    def refresh(self) -> None:
        # Another thread refreshing: serve the current snapshot meanwhile, unless there is
        # none yet (the first requests of a process wait for the first load rather than
        # answering from the fallback while a trained version exists).
        if not self.lock.acquire(blocking=self.checked_at == float("-inf")):
            return
        if self.checked_at != float("-inf") and \
                time.monotonic() - self.checked_at < settings.MODEL_REFRESH_SECONDS:
            self.lock.release()
            return  # refreshed by the thread we waited for
        try:
            wanted = {kind: {"active": None, "candidate": None, "percent": 0}
                      for kind in ModelKind.values}
            try:
                versions = list(ModelVersion.objects.filter(status__in=["active", "candidate"])
                                .only("pk", "kind", "name", "status", "checksum",
                                      "traffic_percent"))
            except DatabaseError:
                logger.exception("Could not read the model registry; serving the loaded "
                                 "versions meanwhile")
                return
            for version in versions:
                if version.status == ModelVersion.Status.ACTIVE:
                    wanted[version.kind]["active"] = version
                elif version.traffic_percent > 0:
                    wanted[version.kind]["candidate"] = version
                    wanted[version.kind]["percent"] = version.traffic_percent
            states = dict(self.states)
            for kind, want in wanted.items():
                states[kind] = self._next_state(kind, states.get(kind, ServingState()), want)
            self.states = states
            # A version loaded in the background but no longer wanted (another was promoted
            # meanwhile) is let go rather than kept in memory.
            wanted_keys = {(version.pk, version.checksum) for version in versions}
            self.loaded_in_background = {key: model for key, model
                                         in self.loaded_in_background.items()
                                         if key in wanted_keys}
            self._watch_artifacts()
            self._watch_loads()
            self.checked_at = time.monotonic()
        finally:
            self.lock.release()

    def _next_state(self, kind: str, current: ServingState, want: dict) -> ServingState:
        active, failure = self._resolve(kind, current.active, want["active"])
        candidate, _ = self._resolve(kind, current.candidate, want["candidate"])
        if candidate is not None and candidate.version_id != want["candidate"].pk:
            candidate = None  # a refused candidate is not replaced by an older one
        return ServingState(active=active, candidate=candidate,
                            candidate_percent=want["percent"] if candidate else 0,
                            load_failed=failure)

    def _resolve(self, kind: str, loaded: LoadedVersion | None,
                 version: ModelVersion | None) -> tuple[LoadedVersion | None, str]:
        if version is None:
            return None, ""
        if loaded is not None and loaded.version_id == version.pk:
            return loaded, ""
        for state in self.states.values():
            for existing in (state.active, state.candidate):
                if existing is not None and existing.version_id == version.pk:
                    return existing, ""
        key = (version.pk, version.checksum)
        refused_at, reason = self.refused.get(key, (float("-inf"), ""))
        if time.monotonic() - refused_at < REFUSED_RETRY_SECONDS:
            return loaded, reason
        if key in self.loaded_in_background:
            return self.loaded_in_background.pop(key), ""
        if settings.MODEL_LOAD_IN_BACKGROUND and self.checked_at != float("-inf"):
            if key not in self.loaders:
                loader = threading.Thread(target=self._load_in_background,
                                          args=(kind, version, loaded, self.generation),
                                          name=f"load {kind} {version.name}", daemon=True)
                loader.start()
                # Safe after start(): the thread ends by taking the lock this refresh holds.
                self.loaders[key] = _BackgroundLoad(thread=loader, kind=kind, name=version.name,
                                                    started_at=time.monotonic())
            # A refused version being tried again stays reported as refused meanwhile.
            return loaded, reason
        try:
            model = self._load(kind, version)
        except _UNSERVABLE as error:
            return loaded, self._refuse(kind, version, loaded, error)
        self.refused.pop(key, None)
        return model, ""

    def _load_in_background(self, kind: str, version: ModelVersion,
                            serving: LoadedVersion | None, generation: int) -> None:
        key = (version.pk, version.checksum)
        model, failure = None, None
        try:
            model = self._load(kind, version)
        except Exception as error:  # reported below, so that the version is retried
            failure = error
        with self.lock:
            if (load := self.loaders.get(key)) and load.thread is threading.current_thread():
                del self.loaders[key]
            if generation != self.generation:
                return  # reset meanwhile: this thread's result belongs to no one
            if failure is None:
                self.refused.pop(key, None)
                self.loaded_in_background[key] = model
            else:
                self._refuse(kind, version, serving, failure,
                             unexpected=not isinstance(failure, _UNSERVABLE))
            # Served by the next request's refresh, not MODEL_REFRESH_SECONDS later.
            self.checked_at = time.monotonic() - settings.MODEL_REFRESH_SECONDS

    def _load(self, kind: str, version: ModelVersion) -> LoadedVersion:
        """The version's model, loaded and checksum-verified; raises one of _UNSERVABLE
        for an artifact that cannot be served."""
        # The signature is taken before verifying: a change made meanwhile is noticed.
        files = _artifact_files(artifact_directory(kind=kind, name=version.name))
        # One load at a time: loading sets process-wide Keras state (the dtype policy).
        with _LOADING:
            model = load_verified_model(kind=kind, name=version.name, checksum=version.checksum)
        logger.info("Loaded %s version %s", kind, version.name)
        return LoadedVersion(version_id=version.pk, name=version.name, model=model, kind=kind,
                             checksum=version.checksum, files=files)

    def _refuse(self, kind: str, version: ModelVersion, loaded: LoadedVersion | None,
                error: Exception, *, unexpected: bool = False) -> str:
        """Logs and remembers a version that could not be loaded; returns why."""
        logger.error("Refusing %s version %s: %s; %s keeps serving", kind, version.name,
                     error, loaded.name if loaded else "the fallback", exc_info=unexpected)
        reason = f"{version.name}: {error}"
        self.refused[(version.pk, version.checksum)] = (time.monotonic(), reason)
        return reason

    def _watch_artifacts(self) -> None:
        loaded = {version.version_id: version for state in self.states.values()
                  for version in (state.active, state.candidate) if version is not None}
        for gone in set(self.changed_on_disk) - set(loaded):
            self.changed_on_disk.pop(gone, None)
        for gone in set(self.checked_files) - set(loaded):
            self.checked_files.pop(gone, None)
        for version in loaded.values():
            directory = artifact_directory(kind=version.kind, name=version.name)
            files = _artifact_files(directory)
            if files == self.checked_files.get(version.version_id, version.files):
                continue
            self.checked_files[version.version_id] = files
            try:
                matches = directory_checksum(directory) == version.checksum
            except OSError:
                matches = False
            if matches:
                # Restored, or only touched: nothing to report any more.
                self.changed_on_disk.pop(version.version_id, None)
                continue
            if version.version_id not in self.changed_on_disk:
                logger.error("The artifact of %s version %s changed on disk since it was "
                             "loaded (checksum mismatch); this process keeps serving the "
                             "copy it verified, a new process would refuse it",
                             version.kind, version.name)
            self.changed_on_disk[version.version_id] = (
                f"{version.name}: artifact changed on disk after loading "
                "(checksum mismatch); serving the verified copy loaded before")

    def _watch_loads(self) -> None:
        for load in self.loaders.values():
            if not load.reported and (report := load.overdue()):
                load.reported = True
                logger.error("%s version %s", load.kind, report)

    def overdue_loads(self, kind: str) -> list[str]:
        """Why this process may serve an older `kind` version than the registry's: its
        loads that have run past MODEL_LOAD_TIMEOUT_SECONDS."""
        # list(): a loader thread may finish (and drop its entry) meanwhile.
        return [report for load in list(self.loaders.values())
                if load.kind == kind and (report := load.overdue())]

    def reset(self) -> None:
        with self.lock:
            self.states = {}
            self.refused = {}
            self.changed_on_disk = {}
            self.checked_files = {}
            self.loaders = {}
            self.loaded_in_background = {}
            self.generation += 1
            self.checked_at = float("-inf")


registry = _Registry()


def serving_version(*, kind: str, user_id: str | None = None) -> LoadedVersion | None:
    """The version that serves this user: the A/B candidate for users in its bucket,
    else the active version; None means the fallback (popular items, VADER) serves."""
    state = registry.state(kind)
    if state.candidate is not None and user_id is not None and \
            ab_bucket(kind=kind, user_id=user_id) < state.candidate_percent:
        return state.candidate
    return state.active


def loaded_versions() -> dict[str, dict]:
    """For /readyz: what each kind serves. A kind with no trained version is ready on its
    fallback; one whose active artifact was refused is not. One whose loaded artifact
    changed on disk, or with a load running past MODEL_LOAD_TIMEOUT_SECONDS, is still ready
    (it serves what it verified, as a process that has not yet loaded a promotion does)
    and says so in `warning`: a hung load also holds up every later one in the process."""
    fallbacks = {ModelKind.RECOMMENDER: "popular", ModelKind.SENTIMENT: "vader"}
    report = {}
    for kind in ModelKind.values:
        state = registry.state(kind)
        # .get, not `in` then [ ]: another thread's refresh may drop an entry in between.
        warnings = [warning for version in (state.active, state.candidate)
                    if version is not None
                    and (warning := registry.changed_on_disk.get(version.version_id))]
        warnings += registry.overdue_loads(kind)
        report[kind] = {
            "version": state.active.name if state.active else None,
            "serving": state.active.name if state.active else fallbacks[kind],
            "candidate": state.candidate.name if state.candidate else None,
            "candidate_percent": state.candidate_percent,
            "loaded": not state.load_failed,
            "error": state.load_failed or None,
            "warning": "; ".join(warnings) or None,
        }
    return report
