"""The run directory: what dsrecon owns, and how it is written without touching anything else.

A fit never writes into its target directly. It builds the run in a staging directory beside the
target, ``PARENT/.NAME.staging``, and renames it into place only when the run is complete:

* a failure (bad data, divergence, an exception) removes the staging directory and nothing else;
* an interruption (SIGINT, SIGTERM, ``kill -9``) keeps it, with its checkpoint, so ``--resume``
  continues from it; a later fit without ``--resume`` clears it, with a note;
* ``--force`` replaces a previous run only after the new one has succeeded: until the final
  rename the old run stays complete and loadable;
* an existing target is used only when it is empty or is a dsrecon run holding nothing but what
  dsrecon wrote there: every file of a run is listed, with its size and sha256, in its
  ``manifest.json`` (written at the commit); a run from before manifests is checked, recursively,
  against the names dsrecon writes. Anything else (``-o .`` over the user's inputs, a figure the
  user saved in ``run/figures/``) is refused, naming the first such file.

The target is resolved to its real path first (`run_target`): ``-o run`` where ``run`` is a symbolic
link (to scratch space, empty or dangling) stages, locks and commits beside the link's target and
leaves the link in place, and two paths to one run share one lock.

The commit is a small journal, so that a kill at any moment of it (``kill -9``, a power cut) never
loses a run: ``PARENT/.NAME.commit`` is written before the first rename of a ``--force`` commit
(old run → ``PARENT/.NAME.replaced``, staging → target, old run removed, journal removed), and
every command that opens the target first completes the commit or keeps the old run
(`recover_commit`), with a one-line note.

One process at a time writes a run: ``PARENT/.NAME.lock`` is held with ``flock`` for the whole fit.
A second process exits naming the holder; a lock left by a dead process (``kill -9``) is taken
over with a note (the kernel releases ``flock`` locks of dead processes).

The parts: `dsrecon.io.run_dir` (the names a run holds, its manifest, which targets ``-o`` may
write), `dsrecon.io.run_lock` (the lock), `dsrecon.io.run_staging` (staging, the commit and its
journal, resuming) and `dsrecon.io.run_config` (config.json, the teacher cache, the compatibility
check of --resume and cohort reruns). This module gathers their public names, which is where the
rest of dsrecon imports them from.
"""

from dsrecon.io.run_config import (COMPATIBILITY_KEYS, check_resumable, data_changed, differences, json_equal, json_value, read_config,
                                   read_teacher_cache, read_training_split, write_config, write_run_description, write_teacher_cache,
                                   write_training_log)
from dsrecon.io.run_dir import (AFTER_COMMIT, CHECKPOINT_DIR, CONFIG_FILE, ENSEMBLE_FILE, LOG_FILE, MANIFEST_FILE, MEMBER_DIR, MODEL_FILE,
                                RUN_ENTRIES, TEACHER_DIR, check_target, foreign_entries, foreign_files, foreign_phrase, has_checkpoint,
                                is_complete, is_run, journal_path, lock_path, replaced_path, resumable, run_target, staging_path,
                                write_manifest)
from dsrecon.io.run_lock import RunLock
from dsrecon.io.run_staging import (COMMIT_STEPS, CommitFaults, StagedRun, commit_pending, glob_escape, inject_commit_faults,
                                    read_staged_config, recorded_sources, recover_commit, resume_checkpoint)

__all__ = [
    "AFTER_COMMIT", "CHECKPOINT_DIR", "COMMIT_STEPS", "COMPATIBILITY_KEYS", "CONFIG_FILE", "ENSEMBLE_FILE", "LOG_FILE", "MANIFEST_FILE",
    "MEMBER_DIR", "MODEL_FILE", "RUN_ENTRIES", "TEACHER_DIR", "CommitFaults", "RunLock", "StagedRun", "check_resumable", "check_target",
    "commit_pending", "data_changed", "differences", "foreign_entries", "foreign_files", "foreign_phrase", "glob_escape",
    "has_checkpoint", "inject_commit_faults", "is_complete", "is_run", "journal_path", "json_equal", "json_value", "lock_path",
    "read_config", "read_staged_config", "read_teacher_cache", "read_training_split", "recorded_sources", "recover_commit",
    "replaced_path", "resumable", "resume_checkpoint", "run_target", "staging_path", "write_config", "write_manifest",
    "write_run_description", "write_teacher_cache", "write_training_log",
]
