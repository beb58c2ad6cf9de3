"""DVC stage `export`: FullNet/TraceNet ONNX + TFLite artifacts with metadata, verified on coco_mini."""

import json
import logging

from tracenet.config import load_params
from tracenet.export.stage import run_export

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    print(json.dumps(run_export(load_params().export), indent=2))
