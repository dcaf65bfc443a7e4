"""Triton python-backend model for a freshlabel teacher (copied as `<version>/model.py`).

Inputs arrive as BYTES (`query`, `pin_text`) and are tokenized here, so requests of any
text length batch together; every request Triton hands to one `execute` call is scored
in one teacher batch: identical pairs in it are scored once, the rest in length-sorted
batches padded per batch, and bi-encoder embeddings of texts seen before come from the
instance's LRU. A teacher with a bi-encoder also declares `query_embedding` and
`pin_embedding` (FP32, [-1, d]): the vectors its bi cosine feature was computed from (the
query, and the pin text as the bi-encoder's view reads it), sent only to requests that
name them among their outputs (students read them; see serving/labeler/drift.py). The
version folder carries its own snapshot of the teacher code (`lib/`)
and weights (`teacher/`, with `teacher/onnx/` graphs when the `runtime` parameter is
"onnx"): the repository runs wherever torch + transformers (+ onnxruntime) do.
"""

import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "lib"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One instance per core: the tokenizer's own thread pool would only take the core of the
# instance beside it (and burn CPU waking up for a few pairs at a time).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Outputs only a teacher with a bi-encoder declares, sent to the requests that name them.
EMBEDDING_OUTPUTS = frozenset({"query_embedding", "pin_embedding"})


def _parameter(config, name, default):
    value = config.get("parameters", {}).get(name, {}).get("string_value")
    return default if value in (None, "") else value


class TritonPythonModel:
    def initialize(self, args):
        import torch

        try:
            from serving.teacher.model import Teacher
            from serving.teacher.onnx_runtime import instance_numerics
        except Exception as exc:
            # transformers' lazy imports hide the real cause; surface it in Triton's log.
            cause = exc.__cause__ or exc.__context__ or exc
            detail = "".join(traceback.format_exception(cause))
            raise RuntimeError(f"cannot import the teacher code: {exc}\n{detail}") from exc

        config = json.loads(args["model_config"])
        threads = int(_parameter(config, "torch_threads", "0"))
        if threads > 0:
            torch.set_num_threads(threads)
        device = "cpu"
        if args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args['model_instance_device_id']}"
        batch_size = int(_parameter(config, "teacher_batch_size", "64"))
        runtime, quantize, precision = instance_numerics(
            device != "cpu",
            _parameter(config, "runtime", "torch"),
            _parameter(config, "quantize", "none"),
            _parameter(config, "gpu_precision", "fp32"),
        )
        self.teacher = Teacher.load(
            HERE / "teacher",
            batch_size=batch_size,
            device=device,
            quantize=quantize,
            runtime=runtime,
            threads=threads,
            precision=precision,
        )
        self.scale = self.teacher.scale

    def _texts(self, request, name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise ValueError(f"input {name!r} is missing")
        values = tensor.as_numpy().reshape(-1)
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]

    def _wants_embeddings(self, request):
        """Whether a request asked for the embeddings (a client naming no outputs gets every
        output the config declares, so Triton lists them all as requested)."""
        if self.teacher.bi_encoder is None:
            return False
        return bool(EMBEDDING_OUTPUTS & set(request.requested_output_names()))

    def execute(self, requests):
        queries, pin_texts, spans, errors = [], [], [], {}
        embeddings = False
        for i, request in enumerate(requests):
            try:
                q = self._texts(request, "query")
                p = self._texts(request, "pin_text")
                if len(q) != len(p):
                    raise ValueError(f"{len(q)} queries but {len(p)} pin texts in one request")
            except (ValueError, UnicodeDecodeError) as exc:
                errors[i] = str(exc)
                spans.append((0, 0))
                continue
            spans.append((len(queries), len(queries) + len(q)))
            queries += q
            pin_texts += p
            embeddings = embeddings or self._wants_embeddings(request)
        if embeddings:
            # The vectors the bi cosine is computed from: no extra forward pass.
            prediction, query_emb, pin_emb = self.teacher.predict_with_embeddings(
                queries, pin_texts
            )
        else:
            prediction = self.teacher.predict(queries, pin_texts)
        responses = []
        for i, (start, end) in enumerate(spans):
            if i in errors:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(errors[i])))
                continue
            outputs = [
                pb_utils.Tensor("probs", prediction.probs[start:end].astype(np.float32)),
                pb_utils.Tensor(
                    "score", prediction.score[start:end].reshape(-1, 1).astype(np.float32)
                ),
                pb_utils.Tensor(
                    "label", prediction.label[start:end].reshape(-1, 1).astype(np.int32)
                ),
            ]
            if embeddings and self._wants_embeddings(requests[i]):
                outputs += [
                    pb_utils.Tensor("query_embedding", np.ascontiguousarray(query_emb[start:end])),
                    pb_utils.Tensor("pin_embedding", np.ascontiguousarray(pin_emb[start:end])),
                ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses

    def finalize(self):
        self.teacher = None
