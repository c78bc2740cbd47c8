"""Numba-compiled streaming numerics: filters, wavelet-packet denoiser, features, ``FrontEnd``.

Pure: arrays in, arrays out; no I/O, no torch.
"""
