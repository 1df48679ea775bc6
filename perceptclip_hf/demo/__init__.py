"""The Gradio demo (`app`: `build_demo`, `launch`, `load_models`); gradio is imported when it is built."""
