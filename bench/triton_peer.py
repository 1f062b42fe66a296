"""Triton Inference Server as a peer: the same ONNX digits file behind Triton's HTTP
and gRPC front ends and its dynamic batcher (through NVIDIA's PyTriton).

It runs in its own virtual environment made from Debian's ``/usr/bin/python3.11``:
PyTriton's Python-backend stub links ``libpython3.11.so``, which pyenv builds lack.
``bench/run.py`` creates that environment when missing. The callable does what
keras-serve does for this model: raw 0-255 intensities divided by 255, reshaped to
the network's input, one ONNX Runtime session with one thread.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", type=Path, required=True)
    parser.add_argument("--model_name", default="digits")
    parser.add_argument("--http_port", type=int, required=True)
    parser.add_argument("--grpc_port", type=int, required=True)
    parser.add_argument("--metrics_port", type=int, required=True)
    parser.add_argument("--max_batch", type=int, default=64)
    parser.add_argument("--delay_us", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(args.model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    shape = [d if isinstance(d, int) else -1 for d in session.get_inputs()[0].shape[1:]]

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        x = (image.astype(np.float32) / 255.0).reshape([len(image), *shape])
        return {"probabilities": np.asarray(session.run(None, {name: x})[0], dtype=np.float32)}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=infer,
            inputs=[Tensor(name="image", dtype=np.uint8, shape=(28, 28))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(10,))],
            config=ModelConfig(
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.delay_us),
            ),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
