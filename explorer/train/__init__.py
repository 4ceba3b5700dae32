"""Quantized training runs: model, quantized GEMMs, data, trainer, results store, PTQ, sweeps.

The model, quantized GEMMs, trainer, PTQ, capture and sweeps import torch; :mod:`.store` (the
results database's schema and writes), :mod:`.data` and :mod:`.export` do not, and readers of
results use :mod:`explorer.results`, outside this package::

    from explorer.train.trainer import TrainConfig, train
    from explorer.train.qlinear import QuantConfig, quantize_model
    r = train(TrainConfig(layers=2, d_model=64, tokens=1_000_000,
                          quant=QuantConfig(fmt="e2m3", block=32)), db="runs.db")

:func:`explorer.train.pipeline.train_ptq_capture` runs what ``fpx train`` does: train, then
post-training quantization of the checkpoints, then capture of the GEMM operands.
"""
