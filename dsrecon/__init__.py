"""dsrecon: dynamical-systems reconstruction from neuroimaging recordings.

Public API: ConvSSM (fit / simulate / score), GroupConvSSM (many subjects), load_run, Recording, read_table, load_inputs.
"""

__all__ = ["ConvSSM", "GroupConvSSM", "load_run", "Recording", "read_table", "load_inputs", "__version__"]


def __getattr__(name: str):  # lazy: `import dsrecon` imports nothing (the CLI's signal handlers come first)
    if name == "Recording":
        from dsrecon.io.recording import Recording

        return Recording
    if name == "ConvSSM":
        from dsrecon.estimators.convssm import ConvSSM

        return ConvSSM
    if name == "load_run":
        from dsrecon.estimators.load import load_run

        return load_run
    if name == "GroupConvSSM":
        from dsrecon.estimators.group import GroupConvSSM

        return GroupConvSSM
    if name == "read_table":
        from dsrecon.io.tables import read_table

        return read_table
    if name == "load_inputs":
        from dsrecon.io.load import load_inputs

        return load_inputs
    if name == "__version__":
        from dsrecon._util import dsrecon_version

        return dsrecon_version()
    raise AttributeError(name)
