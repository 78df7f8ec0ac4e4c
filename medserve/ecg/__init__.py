"""ECG beat anomaly detection: beats, signal processing, synthetic data, the served autoencoder."""
