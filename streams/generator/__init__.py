"""The synthetic search world: `freshlabel generate` (docs/generator.md).

Library use:
    generate_events(settings.generator)  -> the events in production order
    produce_world(settings)              -> events acknowledged by the broker per topic
    run(settings, kafka=..., sample_path=...) -> a report; also writes the truth files
    load_truth(path)                     -> relevance, event log, queries, pins of a run
    labeled_sample(settings, rows)       -> a labeled training table (pyarrow)
"""

from streams.generator.run import GenerationReport, generate_events, produce_world, run

__all__ = [
    "GenerationReport",
    "generate_events",
    "labeled_sample",
    "load_truth",
    "produce_world",
    "run",
]


def __getattr__(name: str) -> object:  # lazy: pyarrow only when these are used
    if name == "load_truth":
        from streams.generator.truth import load_truth

        return load_truth
    if name == "labeled_sample":
        from streams.generator.sample import labeled_sample

        return labeled_sample
    raise AttributeError(name)
