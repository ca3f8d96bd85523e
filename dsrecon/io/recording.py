"""The `Recording`: one run of data as it travels through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsrecon.errors import DataError


@dataclass
class Recording:
    """One recording (run) of ``T`` frames from ``N`` regions.

    data: (T, N) float array. tr: seconds per frame. mask: (T,) bool, True where the frame is
    valid (censored frames stay on the grid with mask False). regressors: (T, R) nuisance
    regressors or None. inputs: (T, S) external inputs (stimuli on the TR grid, `dsrecon.io.events`)
    or None, named by input_names; inputs drive the latent dynamics, never the measurement.
    """

    data: np.ndarray
    tr: float
    names: list[str] = field(default_factory=list)
    mask: np.ndarray | None = None
    regressors: np.ndarray | None = None
    regressor_names: list[str] = field(default_factory=list)
    inputs: np.ndarray | None = None
    input_names: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float64)
        if self.data.ndim == 1:
            self.data = self.data[:, None]
        if self.data.ndim != 2:
            raise DataError(f"{self.source}: expected a (time, regions) array, got shape {self.data.shape}")
        T, N = self.data.shape
        if not self.names:
            self.names = [f"region{i:03d}" for i in range(N)]
        if len(self.names) != N:
            raise DataError(f"{self.source}: {len(self.names)} names for {N} columns")
        if self.mask is None:
            self.mask = np.ones(T, dtype=bool)
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.shape != (T,):
            raise DataError(f"{self.source}: mask has {self.mask.shape[0]} frames, data has {T}")
        if self.regressors is not None:
            self.regressors = np.asarray(self.regressors, dtype=np.float64)
            if self.regressors.ndim == 1:
                self.regressors = self.regressors[:, None]
            if self.regressors.shape[0] != T:
                raise DataError(
                    f"{self.source}: regressors have {self.regressors.shape[0]} rows, data has {T} frames"
                )
        if self.inputs is not None:
            self.inputs = np.asarray(self.inputs, dtype=np.float64)
            if self.inputs.ndim == 1:
                self.inputs = self.inputs[:, None]
            if self.inputs.shape[0] != T:
                raise DataError(f"{self.source}: inputs have {self.inputs.shape[0]} rows, data has {T} frames")
            if not np.isfinite(self.inputs).all():
                raise DataError(f"{self.source}: inputs hold NaN or Inf values")
            if not self.input_names:
                self.input_names = [f"input{i + 1}" for i in range(self.inputs.shape[1])]
            if len(self.input_names) != self.inputs.shape[1]:
                raise DataError(f"{self.source}: {len(self.input_names)} input names for {self.inputs.shape[1]} input columns")
        elif self.input_names:
            raise DataError(f"{self.source}: input names given without inputs")
        if not (np.isfinite(self.tr) and self.tr > 0):
            raise DataError(f"{self.source}: TR must be positive, got {self.tr}")

    @property
    def n_frames(self) -> int:
        return self.data.shape[0]

    @property
    def n_regions(self) -> int:
        return self.data.shape[1]

    def split(self, test_fraction: float) -> tuple["Recording", "Recording"]:
        """Split into a training head and a held-out tail (test_fraction of the frames)."""
        n_test = int(round(self.n_frames * test_fraction))
        cut = self.n_frames - n_test
        return self.slice(0, cut), self.slice(cut, self.n_frames)

    def slice(self, start: int, stop: int) -> "Recording":
        sl = slice(start, stop)
        return Recording(
            data=self.data[sl],
            tr=self.tr,
            names=list(self.names),
            mask=self.mask[sl],
            regressors=None if self.regressors is None else self.regressors[sl],
            regressor_names=list(self.regressor_names),
            inputs=None if self.inputs is None else self.inputs[sl],
            input_names=list(self.input_names),
            provenance=dict(self.provenance),
            source=self.source,
        )
