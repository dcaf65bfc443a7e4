"""Triton python-backend model for a freshlabel student (copied as `<version>/model.py`).

Inputs are the student's precomputed features, never text: `query_embedding` and
`pin_embedding` (FP32, the teacher bi-encoder's width) and `pair_features` (FP32, the
manifest's `pair_features` in order). Every request Triton hands to one `execute` is
scored in one numpy pass. The version folder carries the student (`student/`) and a
snapshot of the code it runs (`lib/`): numpy and pydantic only, no torch.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "lib"))


class TritonPythonModel:
    def initialize(self, args):
        from serving.student.features import StudentInputs
        from serving.student.model import Student

        self.inputs_of = StudentInputs
        self.student = Student.load(HERE / "student")
        self.config = json.loads(args["model_config"])

    def _tensor(self, request, name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise ValueError(f"input {name!r} is missing")
        return tensor.as_numpy().astype(np.float32, copy=False)

    def execute(self, requests):
        parts, spans, errors = [], [], {}
        start = 0
        for i, request in enumerate(requests):
            try:
                part = self.inputs_of(
                    self._tensor(request, "query_embedding"),
                    self._tensor(request, "pin_embedding"),
                    self._tensor(request, "pair_features"),
                )
            except ValueError as exc:
                errors[i] = str(exc)
                spans.append((start, start))
                continue
            parts.append(part)
            spans.append((start, start + len(part)))
            start += len(part)
        if parts:
            prediction = self.student.predict(self.inputs_of.concat(parts))
        responses = []
        for i, (begin, end) in enumerate(spans):
            if i in errors:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(errors[i])))
                continue
            outputs = [
                pb_utils.Tensor("probs", prediction.probs[begin:end].astype(np.float32)),
                pb_utils.Tensor(
                    "score", prediction.score[begin:end].reshape(-1, 1).astype(np.float32)
                ),
                pb_utils.Tensor(
                    "label", prediction.label[begin:end].reshape(-1, 1).astype(np.int32)
                ),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses

    def finalize(self):
        self.student = None
