"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``).

One more protocol adapter beside the REST ones: it decodes protobuf into the same
:class:`~app.serving.inference.InferenceRequest`, calls the same
:meth:`~app.serving.dataplane.DataPlane.infer`, and encodes the answer; validation,
encoding and batching stay in the data plane.

The protocol definition comes from the generated ``service_pb2`` and
``service_pb2_grpc`` modules of ``tritonclient[grpc]``, not from a vendored copy of
the ``.proto``: NVIDIA maintains and releases that package with Triton, its messages
are Triton's own ``grpc_service.proto`` (a superset of KServe's OIP v2 proto with the
repository, statistics and other extensions under the same ``inference`` package and
field numbers), so any OIP v2 gRPC client, Triton's or KServe's, talks to it unchanged.
"""
