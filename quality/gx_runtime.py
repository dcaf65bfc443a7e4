"""One ephemeral Great Expectations context per process, and validation of pandas frames.

Importing great_expectations takes seconds, so it happens on the first validation, not
at import of this module (the sink of a table without a suite never pays it).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.expectations.expectation import Expectation

_lock = threading.Lock()
_batch_definition: BatchDefinition | None = None


def _definition() -> BatchDefinition:
    global _batch_definition
    if _batch_definition is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        # Progress bars would write to the sink's stderr on every batch.
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        source = context.data_sources.add_pandas("freshlabel")
        asset = source.add_dataframe_asset("batch")
        _batch_definition = asset.add_batch_definition_whole_dataframe("whole")
    return _batch_definition


def expectations() -> Any:
    """The `great_expectations.expectations` module (imported on first use)."""
    import great_expectations as gx

    return gx.expectations


def validate(
    frame: pd.DataFrame, checks: Sequence[Expectation], complete: bool
) -> list[ExpectationValidationResult]:
    """Run `checks` on `frame`; `complete` returns every unexpected row index (for the
    quarantine), otherwise only summary statistics."""
    if not checks:
        return []
    import great_expectations as gx
    from great_expectations.validator.v1_validator import Validator

    with _lock:  # the context and its batch definition are shared by every gate
        # What Batch.validate does, minus a first get_batch: GX fingerprints (hashes) the
        # whole frame on every get_batch, and that was the largest cost per batch.
        validator = Validator(
            batch_definition=_definition(),
            batch_parameters={"dataframe": frame},
            result_format="COMPLETE" if complete else "SUMMARY",
        )
        suite = gx.ExpectationSuite(name="batch", expectations=list(checks))
        result = validator.validate_expectation_suite(suite)
    return list(result.results)
