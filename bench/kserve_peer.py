"""The bench's peer: KServe's Python model server serving one image ONNX model over v2.

Runs in its own virtual environment (``kserve`` and ``onnxruntime`` only; it never
imports ``app``). It applies the same encoding as keras-serve's image pipeline
(raw 0-255 intensities divided by ``scale``, reshaped to the model's input shape)
and answers ``probabilities`` FP32 ``[N, classes]``. Access and latency logs are off,
as they are for keras-serve in the bench, and the gRPC server is disabled::

    python bench/kserve_peer.py --model_dir models/digits/2 --model_name digits --http_port 9000
"""

from __future__ import annotations

import argparse
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server


class OnnxImageModel(Model):
    """One ONNX image classifier: ``/scale``, reshape, one ONNX Runtime call."""

    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.scale = 255.0
        self.input_shape: list[int] = []
        self.session: ort.InferenceSession | None = None
        self.input_name = ""

    def load(self) -> bool:
        pipeline = self.model_dir / "pipeline.json"
        if pipeline.exists():
            self.scale = float(json.loads(pipeline.read_text())["scale"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_shape = [int(d) for d in first.shape[1:]]
        self.ready = True
        return self.ready

    def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        assert self.session is not None
        pixels = payload.inputs[0].as_numpy()
        x = (pixels.astype(np.float32) / self.scale).reshape([-1, *self.input_shape])
        probabilities = np.asarray(self.session.run(None, {self.input_name: x})[0], np.float32)
        output = InferOutput(name="probabilities", shape=list(probabilities.shape), datatype="FP32")
        output.set_data_from_numpy(probabilities, binary_data=False)
        return InferResponse(
            response_id=payload.id or uuid.uuid4().hex,  # v2 responses need an id
            model_name=self.name,
            infer_outputs=[output],
        )


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_dir", type=Path, required=True)
    args, _ = parser.parse_known_args(argv)
    model = OnnxImageModel(args.model_name, args.model_dir)
    model.load()
    server = ModelServer(
        http_port=args.http_port, workers=1, enable_grpc=False, enable_latency_logging=False
    )
    logging.getLogger("uvicorn.access").disabled = True
    server.start([model])


if __name__ == "__main__":
    main()
