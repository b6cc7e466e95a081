"""Reports: model selection over (ASR, accuracy) points, figures and the HTML page."""
