"""Quantized training runs: model, quantized GEMMs, data, trainer, results store, PTQ, sweeps.

Torch-free entry point for readers of results: :mod:`explorer.train.store`.  Everything else
imports torch::

    from explorer.train.trainer import TrainConfig, train
    from explorer.train.qlinear import QuantConfig, quantize_model
    r = train(TrainConfig(layers=2, d_model=64, tokens=1_000_000,
                          quant=QuantConfig(fmt="e2m3", block=32)), db="runs.db")
"""
