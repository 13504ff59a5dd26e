"""Real-browser tests (pytest -m browser): JupyterLab in headless Chromium, driven by playwright."""
