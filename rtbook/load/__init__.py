"""Load and latency: open-model Phoenix load with exact HDR percentiles and delivery accounting."""
