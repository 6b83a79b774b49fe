"""Signal processing on numpy arrays: STFT analysis and resynthesis, mel bands, the limiter (no torch)."""
