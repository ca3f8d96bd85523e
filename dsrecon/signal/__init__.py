"""Signal preparation: measurement kernels, Wiener deconvolution, cleaning."""
