"""BIDS-derivative outputs: dataset_description.json, entity-keeping names, TSV sidecars."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsrecon._util import dsrecon_version
from dsrecon.errors import DsreconError
from dsrecon.io.recording import Recording
from dsrecon.io.results import bids_entities, derivative_name, tsv_sidecar, write_dataset_description


def test_dataset_description_is_a_derivative_with_the_version(tmp_path):
    path = write_dataset_description(tmp_path / "run")
    desc = json.loads(path.read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "dsrecon"
    assert desc["GeneratedBy"][0]["Version"] == dsrecon_version()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["dataset_description.json"]  # no temp left


def test_entities_from_an_fmriprep_name():
    name = "/d/sub-01/ses-2/func/sub-01_ses-2_task-rest_run-3_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    assert bids_entities(name) == {"sub": "01", "ses": "2", "task": "rest", "run": "3"}
    assert bids_entities("table.tsv") == {}
    assert bids_entities(None) == {}


@pytest.mark.parametrize(
    "ents, desc, suffix, ext, expected",
    [
        ({"sub": "01", "task": "rest"}, "teacher", "timeseries", ".tsv", "sub-01_task-rest_desc-teacher_timeseries.tsv"),
        ({"run": "2", "sub": "01", "ses": "a", "task": "rest"}, "generated", "timeseries", "tsv",
         "sub-01_ses-a_task-rest_run-2_desc-generated_timeseries.tsv"),
        ({}, "model", "metrics", ".json", "desc-model_metrics.json"),
        ({"sub": "01"}, None, "timeseries", ".json", "sub-01_timeseries.json"),
    ],
)
def test_derivative_names(ents, desc, suffix, ext, expected):
    assert derivative_name(ents, desc, suffix, ext) == expected


def test_round_trip_keeps_the_source_entities():
    src = "sub-07_task-nback_run-1_desc-preproc_bold.nii.gz"
    assert derivative_name(bids_entities(src), "teacher", "timeseries", ".tsv") == "sub-07_task-nback_run-1_desc-teacher_timeseries.tsv"


def test_bad_labels_are_refused():
    with pytest.raises(DsreconError, match="letters and digits"):
        derivative_name({"sub": "0_1"}, "x", "timeseries", ".tsv")
    with pytest.raises(DsreconError, match="desc-a-b"):
        derivative_name({}, "a-b", "timeseries", ".tsv")


def test_sidecar_for_bold_and_calcium():
    bold = Recording(np.zeros((5, 2)), tr=2.0, source="x.nii.gz",
                     provenance={"atlas": "atlas.nii.gz", "confounds": "scrubbing", "n_masked_frames": 3})
    side = tsv_sidecar(bold, columns=bold.names, Seed=4)
    assert side["RepetitionTime"] == 2.0 and "SamplingFrequency" not in side
    assert side["Atlas"] == "atlas.nii.gz" and side["ConfoundStrategy"] == "scrubbing"
    assert side["NumberOfMaskedFrames"] == 3 and side["Seed"] == 4
    assert side["GeneratedBy"]["Version"] == dsrecon_version() and "numpy" in side["Versions"]
    ca = Recording(np.zeros((5, 2)), tr=1 / 30, provenance={"modality": "calcium"})
    side = tsv_sidecar(ca)
    assert side["SamplingFrequency"] == pytest.approx(30.0) and "RepetitionTime" not in side
    assert side["Units"] == "dF/F"
