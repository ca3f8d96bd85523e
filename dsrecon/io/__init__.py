"""Readers and writers: tables, NIfTI + atlas, fMRIPrep/BIDS, calcium imaging, results."""

from dsrecon.io.recording import Recording

__all__ = ["Recording"]
