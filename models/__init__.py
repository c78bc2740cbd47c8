"""Learned models on arrays: xLSTM regressor and step engine, Lag-Llama, baselines, metrics, bundles."""
