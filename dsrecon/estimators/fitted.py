"""A fitted convSSM's contract for analysis and reports, its free runs (`simulate`, `long_run`),
its scoring (`score`) and its rebuilding from a run directory (`from_run`): `FittedConvSSM`, the
part of `dsrecon.ConvSSM` that needs a fitted network (``net_``) and its record (``config_``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from dsrecon._util import seed_everything
from dsrecon.errors import DataError, DivergenceError, DsreconError, OptionError
from dsrecon.io.recording import Recording
from dsrecon.io.run_check import check_config, check_sizes, check_weights
from dsrecon.io.runs import CONFIG_FILE, MODEL_FILE
from dsrecon.estimators.record import config_key, one_line, read_run_config, with_input_arrays
from dsrecon.models.convssm import ConvSSMNet
from dsrecon.models.noise import NoiseModel
from dsrecon.options import model_fields
from dsrecon.signal.kernels import Kernel
from dsrecon.training import checkpoint as ckpt
from dsrecon.training.prepare import Normalisation

#: steps of the free run `ConvSSM.long_run` checks after a fit (validation's shortest run)
LONG_RUN_STEPS = 10_000


class FittedConvSSM:
    """Mixed into `dsrecon.ConvSSM`: everything a fitted model does (module docstring)."""

    net_: ConvSSMNet | None
    config_: dict
    run_dir_: Path | None

    # ---------------------------------------------------------------- contract for analysis/report
    @property
    def dynamics(self):
        return self._net().dynamics

    @property
    def kernel_(self) -> Kernel:
        return Kernel.from_dict(self.config_["kernel"])

    @property
    def tr(self) -> float:
        return float(self.config_["tr"])

    @property
    def names(self) -> list[str]:
        return list(self.config_["names"])

    @property
    def config(self) -> dict:
        return self.config_

    @property
    def run_dir(self) -> Path | None:
        return self.run_dir_

    @property
    def norm_(self) -> Normalisation:
        return Normalisation.from_dict(self.config_["normalisation"])

    def _net(self) -> ConvSSMNet:
        if self.net_ is None:
            raise DsreconError("model is not fitted: call fit() or load_run()")
        return self.net_


    @classmethod
    def from_run(cls, run: Path, device: str = "cpu"):
        """The fitted model of the single run directory ``run`` (model.safetensors + config.json;
        `dsrecon.load_run` first recovers a cut-short commit and tells a group run from a single one).

        A damaged run (unreadable or incomplete config.json, empty or truncated weights, weights that do
        not fit the configuration) is a DataError naming the file and what is wrong with it."""
        cfg_path = run / CONFIG_FILE
        cfg = read_run_config(cfg_path)
        check_config(cfg, cfg_path)  # types, ranges, status: one line naming the key
        norm = cfg["normalisation"]
        state = ckpt.load_tensors(run / MODEL_FILE)
        check_sizes(cfg, cfg_path, check_weights(state, run / MODEL_FILE))  # before building: no size allocates at random
        try:
            params = {f.name: cfg[config_key(f)] for f in model_fields() if config_key(f) in cfg}
            m = cls(**params, **cfg["train_options"])  # the options as the run recorded them
            kern = Kernel.from_dict(cfg["kernel"])
            net = m.build_net(cfg["n_regions"], len(cfg.get("regressor_names", [])), kern, torch.Generator().manual_seed(0),
                              len(cfg.get("input_names") or []), latent_dim=cfg["latent_dim"])  # the built M
            Normalisation.from_dict(norm)
        except (DsreconError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{cfg_path}: does not describe a model dsrecon can rebuild ({one_line(e)})") from None
        if "z_init" not in state:
            raise DataError(f"{run / MODEL_FILE}: no 'z_init' tensor (not the weights of a dsrecon model)")
        net.register_buffer("z_init", state["z_init"].clone())
        if "noise.process_chol" in state and "noise.obs_chol" in state:  # a model with its noise model (stochastic runs)
            net.set_noise(NoiseModel(net.F, net.N))
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in state.items()}
        missing = [k for k in want if k not in have]
        extra = [k for k in have if k not in want]
        wrong = [k for k in want if k in have and want[k] != have[k]]
        if missing or extra or wrong:
            if wrong:
                k = wrong[0]
                what = f"tensor '{k}' has shape {have[k]} in the weights but {want[k]} from {CONFIG_FILE}"
            elif missing:
                what = f"tensor '{missing[0]}' that {CONFIG_FILE} calls for is missing from the weights"
            else:
                what = f"the weights hold tensor '{extra[0]}' that {CONFIG_FILE} does not call for"
            more = len(missing) + len(extra) + len(wrong) - 1
            raise DataError(f"{run / MODEL_FILE}: does not match {cfg_path}: {what}" + (f" (and {more} more)" if more else ""))
        net.load_state_dict(state)
        net.eval()
        m.net_, m.config_, m.run_dir_, m.device_ = net, cfg, run, device  # generation runs on the CPU
        return m

    # ---------------------------------------------------------------- device
    def to(self, device: str):
        """Move the fitted model (for generation and scoring) to a torch device: cpu or cuda (recorded
        in ``device_``; the ``device`` option stays as given).

        Free runs are sequential, so the CPU (fused numba path) is usually the faster choice."""
        self._net().to(device)
        self.device_ = device
        return self

    # ---------------------------------------------------------------- generation
    def _state0(self, data: Recording | None, net: ConvSSMNet) -> torch.Tensor:
        if data is None:
            return net.z_init[None].clone()
        return self._reliable_state(data, net, "last")[0]

    def _reliable_state(self, data: Recording, net: ConvSSMNet, which: str) -> tuple[torch.Tensor, int]:
        from dsrecon.signal.deconvolution import wiener_deconvolve

        x = self.norm_.apply(data.data, data.source, data.names)
        found = net.state_from_reliable(wiener_deconvolve(x, self.kernel_.taps), which)
        if found is None:
            raise DataError(f"{data.source}: too short to infer an initial state (no reliable deconvolved frame)")
        return found

    @property
    def input_names(self) -> list[str]:
        """The external input channels the model was fitted with ([]: autonomous)."""
        return list(self.config_.get("input_names") or [])

    def check_inputs(self, inputs: np.ndarray | None, source: str = "inputs", n_frames: int | None = None) -> np.ndarray | None:
        """``inputs`` (T, K) as float64, checked against the model's input channels; None stays None
        (a model with inputs then runs with zero input: the autonomous system)."""
        if inputs is None:
            return None
        if not self.input_names:
            raise DataError(f"{source}: the model was fitted without inputs (no --events / --inputs); it takes none")
        s = np.asarray(inputs, dtype=np.float64)
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2 or s.shape[1] != len(self.input_names):
            raise DataError(f"{source}: {s.shape[-1] if s.ndim else 0} input column(s), the model has {len(self.input_names)} "
                            f"({', '.join(self.input_names)})")
        if n_frames is not None and s.shape[0] != n_frames:
            raise DataError(f"{source}: {s.shape[0]} input rows for {n_frames} frames")
        if not np.isfinite(s).all():
            raise DataError(f"{source}: NaN or Inf in the inputs")
        return s

    @torch.no_grad()
    def simulate(self, n_steps: int, seed: int = 0, data: Recording | None = None, inputs: np.ndarray | None = None,
                 start: str = "end", stochastic: bool | None = None) -> dict:
        """Free run of n_steps observations (§5). Returns {"observed": (n, N) in data units,
        "observed_normalised": (n, N), "latent": (n, M), "first_frame"} with latent row j aligned
        to observation j.

        The run starts from the state inferred at the end of ``data`` (default: of the training
        data). ``inputs`` (L, K): the external inputs of generated frames 0 … L−1 (row f drives the
        latent state that observation f reads; zero input beyond L and for the kernel's warm-up
        states); without inputs a model fitted with inputs generates the autonomous system.

        ``start="start"`` replays ``data`` instead: the run starts from the state inferred at the
        recording's first reliable deconvolved frame r, ``inputs`` are the recording's own design
        (row f: its frame f; zero beyond), and generated observation j is the recording's frame
        ``first_frame`` + j (r + K − 1, the first the kernel can reach from there).

        ``stochastic``: add the fitted process and observation noise (`dsrecon.models.noise`),
        drawn from ``seed``; None: the model's default (`generation_`).
        Raises DivergenceError when the run leaves the bounded regime."""
        if n_steps < 1:
            raise OptionError(f"`n_steps` must be positive, got {n_steps}")
        if start not in ("start", "end"):
            raise DsreconError(f"start must be 'start' or 'end', got '{start}'")
        net = self._net()
        s = self.check_inputs(inputs)
        seed_everything(seed)
        gen = self._noise_generator(stochastic, seed)
        first = 0
        if start == "start":
            if data is None:
                raise OptionError("replaying a recording from its start needs the recording (`data`)")
            state0, r = self._reliable_state(data, net, "first")
            first = r + net.K - 1
            u = None
            if s is not None:  # rollout row i − 1 drives latent state i, the teacher's frame r + i
                u = torch.as_tensor(s[r + 1 : r + n_steps + net.K - 1], dtype=torch.float32)[None]
            x, Z = net.free_run(state0, n_steps, u, generator=gen)
        else:
            x, Z = net.free_run(self._state0(data, net), n_steps, None if s is None else net.step_inputs(s, n_steps), generator=gen)
        x = x[0].cpu().numpy().astype(np.float64)
        lat = Z[0, net.K - 1 :, : net.M].cpu().numpy().astype(np.float64)
        if not (np.isfinite(x).all() and np.isfinite(lat).all()) or np.abs(lat).max() > 1e4:
            bad = np.flatnonzero(~np.isfinite(lat).all(1) | (np.abs(lat).max(1) > 1e4))
            raise DivergenceError(f"the free run diverged (non-finite or exploding states from step {int(bad[0]) if bad.size else '?'}); nothing was written")
        return {"observed": self.norm_.invert(x), "observed_normalised": x, "latent": lat, "first_frame": first,
                "stochastic": gen is not None}

    @property
    def generation_(self) -> str:
        """How this fitted model's free runs are made by default: "stochastic" (the fitted noise added)
        or "deterministic" (the map alone): the fit's ``generation`` option, deterministic without a
        noise model (runs of older dsrecon versions)."""
        g = (self.config_.get("train_options") or {}).get("generation") or "deterministic"
        return "stochastic" if g == "stochastic" and self._net().noise is not None else "deterministic"

    def _noise_generator(self, stochastic: bool | None, seed: int) -> torch.Generator | None:
        """The generator of a stochastic free run (None: deterministic); ``stochastic`` None: `generation`."""
        if stochastic is None:
            stochastic = self.generation_ == "stochastic"
        if not stochastic:
            return None
        if self._net().noise is None:
            raise DsreconError("this model has no noise model (fitted by an older dsrecon): it generates deterministic runs only")
        return torch.Generator().manual_seed(int(seed))

    def long_run(self, n_steps: int = LONG_RUN_STEPS) -> dict:
        """Where the fitted model's free run ends up: an ``n_steps`` run from the end of the training
        data (no inputs). Returns {"steps", "spread", "settles", "diverged"}: ``spread`` is the largest
        std over regions of the last quarter, in the training data's z-units (about 1 for a run on
        the data's attractor); ``settles`` is spread below 0.05, the collapse test validation uses
        (a fixed point or a tiny cycle: the model has lost the data's oscillation). The run is the
        one users get by default (`generation_`, recorded as "generation"): a stochastic model's
        noise keeps its run moving even where its map alone settles."""
        from dsrecon.training.validation import COLLAPSE_SPREAD

        gen = self.generation_
        try:
            x = self.simulate(int(n_steps))["observed_normalised"]
        except DivergenceError:
            return {"steps": int(n_steps), "spread": float("inf"), "settles": False, "diverged": True, "generation": gen}
        spread = float(x[-max(1, x.shape[0] // 4):].std(0).max())
        return {"steps": int(n_steps), "spread": spread, "settles": spread < COLLAPSE_SPREAD, "diverged": False, "generation": gen}

    # ---------------------------------------------------------------- scoring
    def score(self, test: Recording, *, n_pe: int | None = None, stsp: str = "auto", bins: int = 30, gmm_var: float = 1.0,
              smoothing: float = 20.0, seed: int = 0, gmm_points: str = "first", inputs: np.ndarray | None = None,
              fcd_window_s: float = 30.0, keep_series: bool = False, stochastic: bool | None = None) -> dict:
        """§6 protocol on a test recording: generate 1.25·T, drop 0.25·T, D_stsp and D_H; FC_corr,
        FC_rmse and FCD_KS (windows of ``fcd_window_s`` seconds, metrics.connectivity); plus PE_n.
        ``stochastic``: the free run with the fitted noise (None: the model's `generation_`).

        ``gmm_points`` (first|even): which ≤ 10 000 rows the mixture D_stsp keeps (metrics.stsp).
        A model fitted with inputs needs the test design: ``test.inputs`` or ``inputs`` (T, K); it
        drives PE_n and the last T frames of the free run (returned as ``generated_test_period``).
        ``keep_series``: also return the scored free run and the test data, both normalised
        (``generated_test_period``, ``test_normalised``)."""
        if inputs is not None:
            test = with_input_arrays([test], [inputs], self.input_names or None)[0]
        from dsrecon.metrics.prediction import prediction_error
        from dsrecon.metrics.spectrum import hellinger_spectral
        from dsrecon.metrics.stsp import state_space_divergence
        from dsrecon.signal.deconvolution import wiener_deconvolve

        net = self._net()
        if test.n_regions != len(self.names):
            raise DataError(f"{test.source}: {test.n_regions} columns, the model was fitted on {len(self.names)} regions")
        K = self.kernel_.K
        if test.n_frames < K:  # the teacher of PE_n is deconvolved with the kernel
            raise DataError(f"{test.source}: {test.n_frames} frames, shorter than the model's kernel ({K} taps): "
                            f"test data need at least {K} frames")
        x = self.norm_.apply(test.data, test.source, test.names)
        T = x.shape[0]
        n_total = int(math.ceil(1.25 * T))
        if self.input_names and test.inputs is None:
            raise DataError(f"{test.source}: the model was fitted with inputs ({', '.join(self.input_names)}); give the test "
                            "data's inputs (--events / --inputs)")
        s = self.check_inputs(test.inputs, test.source, T)
        u = None
        if s is not None:  # the test design on the last T generated frames (the ones compared), zero before
            u = net.step_inputs(np.concatenate([np.zeros((n_total - T, s.shape[1])), s]), n_total)
        with torch.no_grad():
            gen, Z = net.free_run(net.z_init[None].clone(), n_total, u, generator=self._noise_generator(stochastic, seed))
        gen = gen[0, n_total - T :].cpu().numpy().astype(np.float64)
        diverged = not np.isfinite(gen).all() or np.abs(Z.cpu().numpy()).max() > 1e4
        from dsrecon.metrics.yardsticks import connectivity

        conn = {"FC_corr": float("nan"), "FC_rmse": float("nan"), "FCD_KS": float("nan")}
        if diverged:
            d_stsp, method, d_h = float("inf"), stsp, float("nan")
        else:
            d_stsp, method = state_space_divergence(gen[test.mask], x[test.mask], method=stsp, bins=bins, var=gmm_var, seed=seed,
                                                     gmm_points=gmm_points)
            d_h = hellinger_spectral(gen, x, smoothing=smoothing)
            conn = connectivity(gen[test.mask], x[test.mask], self.tr, fcd_window_s)
        if n_pe is None:
            n_pe = 20 if self.tr < 0.5 else 10
        teacher = wiener_deconvolve(x, self.kernel_.taps)
        pe = prediction_error(net, x.astype(np.float32), teacher.astype(np.float32), n_pe, test.mask, inputs=s)
        out = {"D_stsp": float(d_stsp), "D_stsp_method": method, "D_H": float(d_h), f"PE{n_pe}": pe, "PE_n": pe, "n": n_pe,
               **conn, "FCD_window_s": float(fcd_window_s), "n_test": T, "n_generated": n_total, "diverged": bool(diverged), "seed": seed,
               "generation": "stochastic" if (self.generation_ == "stochastic" if stochastic is None else stochastic) else "deterministic"}
        if s is not None:
            out["inputs"] = list(self.input_names)
        if s is not None or keep_series:
            out["generated_test_period"] = gen  # normalised units, aligned with the test frames
        if keep_series:
            out["test_normalised"] = x
        return out

