"""Daemon configurations for the integration tests, assembled from stage blocks, so that a test
writes only what it changes and the usual pipeline (replay -> collector -> estimator ->
predictor <-> learner -> file) is written once.

Option values are written as JSON, which is YAML's flow syntax: strings quoted, lists and
objects inline, booleans as true/false.
"""
import json
from pathlib import Path


def _value(v):
    if isinstance(v, Path):
        v = str(v)
    if isinstance(v, tuple):
        v = list(v)
    return json.dumps(v)


def stage(name, type, inputs=None, outputs=None, **options):
    """One stage block: `name:` with its type, inputs, outputs and options (in that order)."""
    lines = [f"  {name}:", f"    type: {type}"]
    if inputs is not None:
        lines.append(f"    inputs: {_value(inputs)}")
    if outputs is not None:
        lines.append(f"    outputs: {_value(outputs)}")
    lines += [f"    {k}: {_value(v)}" for k, v in options.items() if v is not None]
    return "\n".join(lines)


def replay(path, sources=2, max_cascades=2, seed=1, name="source", **options):
    """A replay of `path` into the `tweets` stream."""
    return stage(name, "replay", outputs={"tweets": "tweets"}, path=path, sources=sources,
                 max_cascades=max_cascades, seed=seed, **options)


def collector(windows=(600, 1200), terminated=1800, min_cascade_size=10, name="collector", **options):
    """tweets -> cascade_series and sizes on cascade_properties."""
    return stage(name, "collector", inputs={"tweets": "tweets"},
                 outputs={"series": "cascade_series", "sizes": "cascade_properties"},
                 windows=windows, terminated=terminated, min_cascade_size=min_cascade_size, **options)


def estimator(parameters="cascade_properties", name="estimator", **options):
    """cascade_series -> parameters (on cascade_properties, beside the sizes, by default)."""
    return stage(name, "estimator", inputs={"series": "cascade_series"},
                 outputs={"parameters": parameters}, **options)


def predictor(mode, properties=("cascade_properties",), models="models", name="predictor", **options):
    """properties (and models) -> alerts, stats, samples."""
    inputs = {"properties": list(properties)}
    if models:
        inputs["models"] = models
    return stage(name, "predictor", inputs=inputs,
                 outputs={"alerts": "alerts", "stats": "stats", "samples": "samples"}, mode=mode, **options)


def learner(mode, name="learner", **options):
    """samples -> models."""
    return stage(name, "learner", inputs={"samples": "samples"}, outputs={"models": "models"},
                 mode=mode, **options)


def file_sink(directory, streams, name="sink", **options):
    """Writes each of `streams` to `<directory>/<stream>.jsonl`."""
    return stage(name, "file", inputs={"streams": list(streams)}, directory=directory, **options)


def write_config(path, plugins, *stages, progress_interval=0, **top):
    """Writes a configuration file of `stages` (blocks from the functions above) and returns it."""
    head = [f"plugins: [{', '.join(plugins)}]", f"progress_interval: {progress_interval}"]
    head += [f"{k}: {_value(v)}" for k, v in top.items()]
    Path(path).write_text("\n".join(head + ["stages:", *stages]) + "\n")
    return Path(path)
