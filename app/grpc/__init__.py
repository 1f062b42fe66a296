"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``).

One more protocol adapter beside the REST ones: it decodes protobuf into the same
:class:`~app.serving.inference.InferenceRequest`, calls the same
:meth:`~app.serving.dataplane.DataPlane.infer`, and encodes the answer; validation,
encoding and batching stay in the data plane.

* ``servicer.py``: the RPCs, protobuf in and out (the adapter proper);
* ``http2.py`` and ``calls.py``: keras-serve's own transport for unary gRPC calls
  (HTTP/2 frames; gRPC paths, status trailers, deadlines), the default server;
* ``server.py``: starts and stops it, or ``grpc.aio`` with ``GRPC_SERVER=grpcio``.

The protocol definition comes from the generated ``service_pb2`` and
``service_pb2_grpc`` modules of ``tritonclient[grpc]``, not from a vendored copy of
the ``.proto``: NVIDIA maintains and releases that package with Triton, its messages
are Triton's own ``grpc_service.proto`` (a superset of KServe's OIP v2 proto with the
repository, statistics and other extensions under the same ``inference`` package and
field numbers), so any OIP v2 gRPC client, Triton's or KServe's, talks to it unchanged.
"""
