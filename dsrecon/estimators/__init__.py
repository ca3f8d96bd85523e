"""The estimators floor: the fit modes and the one fit skeleton they share.

* `session` — `FitSession`, the one skeleton (stage, resume and memory checks, prepare, seed,
  build, write the record, run the engine, translate an interrupt, save, commit), driven by a
  `FitMode` object per mode;
* `convssm` — `ConvSSM` (one model; its options `params`, its fitted behaviour `fitted`, its run
  record `record`);
* `ensemble` — `fit_ensemble`: K members in one session, and the selection of the best;
* `group` — `GroupConvSSM`: a session with the `GroupTrainer` (`group_fit`), subjects, transfer,
  the features table (`group_run`);
* `load` — `load_run`, the one module that knows every run format.

`dsrecon.api`, `dsrecon.group` and `dsrecon.ensemble` re-export these names.
"""
