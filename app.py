"""Entry point of the MoScale Hugging Face Space (docs/demo.md): `python app.py` serves the web demo.

It serves the model bundled with moscale, or the pipeline folder or Hub id in the MOSCALE_MODEL variable (a Space
setting). Gradio reads the address and port from GRADIO_SERVER_NAME and GRADIO_SERVER_PORT, which Spaces set.
"""

import os

from moscale.demo import build_demo

demo = build_demo(os.environ.get("MOSCALE_MODEL") or None)

if __name__ == "__main__":
    demo.launch()
